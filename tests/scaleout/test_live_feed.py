"""The Workbench's live view in one process shows the work of every process on the same Redis."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from stepline import Stepline
from stepline.adapters.base import TraceRecord

from ..conftest import free_port
from ..durability.chain import write_chain_project
from ..durability.helpers import healthy, kill_group, start_server, wait_until


async def test_an_api_process_sees_the_records_a_worker_process_writes(tmp_path: Path, redis_store: str) -> None:
    root = write_chain_project(tmp_path / "chain")
    port = free_port()
    worker = start_server(root, port, tmp_path / "worker.log", "--role", "worker", store=redis_store)
    try:
        await asyncio.to_thread(wait_until, lambda: healthy(port), 30, "the worker")
        app = Stepline(root, store=redis_store, role="api")
        async with app.lifespan():
            live: asyncio.Queue[TraceRecord] = asyncio.Queue()
            unsubscribe = app.engine.subscribe(live)
            await asyncio.sleep(0.3)  # subscribed on the server
            event = await app.emit("chain.a", {"id": 7})
            seen: list[TraceRecord] = []
            async with asyncio.timeout(20):
                while not any(r.kind == "end" and r.step == "C" for r in seen):
                    seen.append(await live.get())
            unsubscribe()
        steps = {r.step for r in seen if r.kind == "end" and r.trace_id == event.trace_id}
        assert steps == {"A", "B", "C"}  # run by the worker process, shown here
        assert [r.kind for r in seen].count("emit") >= 3  # this process's emit, once, and the worker's
        assert len([r for r in seen if r.kind == "start" and r.step == "A"]) == 1  # each record once
    finally:
        kill_group(worker, signal.SIGTERM)
