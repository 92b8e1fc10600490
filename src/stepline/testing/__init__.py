"""Helpers for testing a Stepline project: run it for real, call it over HTTP, wait for its flows to settle.

    from stepline.testing import serve

    async def test_report_flow():
        async with serve("path/to/project") as app:
            response = await app.client.post("/reports", json={"month": "2026-10"})
            assert response.status_code == 202
            await app.settle()
            trace = await app.trace(response.json()["traceId"])

`serve` starts a real uvicorn server on a free port of 127.0.0.1 in the test's own event loop, so the
test talks HTTP to the same server `stepline dev` would run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import uvicorn

from stepline import _json
from stepline._clock import FakeClock
from stepline._ids import new_id
from stepline.adapters.base import Event, TraceRecord
from stepline.app import Stepline
from stepline.http.server import bind, server_config
from stepline.steps.config import ApiConfig, CronConfig, EventConfig
from stepline.steps.request import ApiRequest
from stepline.testing.scripted_llm import Answer, ScriptedLLM

__all__ = ["Answer", "Emitted", "FakeClock", "RunningApp", "ScriptedLLM", "StepRun", "serve"]


@dataclass(frozen=True)
class Emitted:
    """An event a handler emitted under `run_step`: kept, not delivered."""

    topic: str
    data: Any
    delay: float = 0.0
    message_group_id: str | None = None
    idempotency_key: str | None = None


@dataclass
class StepRun:
    """What one handler did when run alone: what it returned, what it emitted, and its trace."""

    result: Any
    emitted: list[Emitted]
    trace_id: str

    def topics(self) -> list[str]:
        return [e.topic for e in self.emitted]


@dataclass
class RunningApp:
    stepline: Stepline
    url: str
    client: httpx.AsyncClient

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every event emitted so far (and every event those emitted) has been handled."""
        await self.stepline.settle(timeout)

    async def emit(self, topic: str, data: Any = None) -> str:
        """Emit from outside any step; returns the new trace id."""
        return (await self.stepline.emit(topic, data)).trace_id

    async def trace(self, trace_id: str) -> list[TraceRecord]:
        await self.stepline.engine.flush()
        return await self.stepline.engine.traces.trace(trace_id)

    async def state(self, group: str, key: str) -> Any:
        return await self.stepline.engine.state.get(group, key)

    async def run_step(self, name: str, input: Any = None) -> StepRun:
        """Run one step's handler once, alone: with its real `ctx` (state, logger, streams, the model),
        its input checked against its schema as a delivery's would be, and its emits kept in the result
        instead of delivered, so no step after it runs. An event step gets `input` as its event data, an
        API step an `ApiRequest` (or a dict, taken as the JSON body), a cron step nothing. Its timeout,
        retries and middleware do not apply: it is the handler alone, an exception it raises is raised here."""
        engine = self.stepline.engine
        step = engine.project.steps.get(name)
        if step is None:
            raise KeyError(f"no step {name!r}; the project has {', '.join(sorted(engine.project.steps))}")
        emitted: list[Emitted] = []

        async def keep(
            step: str | None,  # the Emitter protocol's names
            trace_id: str,
            topic: str,
            data: Any,
            message_group_id: str | None = None,
            delay: float = 0.0,
            idempotency_key: str | None = None,
        ) -> Event:
            engine.check_emit(step, topic, delay)
            data = _json.loads(_json.dumps(data, f"data of the event {topic!r}"))  # as a store would give it back
            emitted.append(Emitted(topic, data, delay, message_group_id, idempotency_key))
            return Event(new_id(), topic, data, trace_id, step, engine.clock.time(), message_group_id)

        trace_id = new_id()
        ctx = engine.context(step, trace_id, emitter=keep)
        if isinstance(step.config, CronConfig):
            args: tuple[Any, ...] = ()
        elif isinstance(step.config, ApiConfig):
            args = (input if isinstance(input, ApiRequest) else ApiRequest(body=input, method=step.config.method),)
        else:
            if isinstance(step.config, EventConfig) and step.config.input is not None:
                input = step.config.input.validate(input, f"the input of step {name!r}")
            args = (input,)
        result = await engine.call(step, ctx, *args)
        return StepRun(result, emitted, trace_id)


@contextlib.asynccontextmanager
async def serve(root: str | Path, *, dev: bool = True, **options: Any) -> AsyncIterator[RunningApp]:
    """Load the project at `root`, serve it over HTTP on a free port, and stop it afterwards."""
    stepline = Stepline(root, dev=dev, **options)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(stepline.asgi))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error
        await asyncio.sleep(0.005)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield RunningApp(stepline, url, client)
    finally:
        server.should_exit = True
        await task
        sock.close()
