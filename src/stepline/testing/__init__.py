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

from stepline._clock import FakeClock
from stepline.adapters.base import TraceRecord
from stepline.app import Stepline
from stepline.http.server import bind, server_config
from stepline.testing.scripted_llm import Answer, ScriptedLLM

__all__ = ["Answer", "FakeClock", "RunningApp", "ScriptedLLM", "serve"]


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
