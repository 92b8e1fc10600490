"""A handler that hangs or blocks is contained: hung sync handlers never take the slots of healthy ones, and
an async handler that blocks the event loop is named, with its line, in the log and in its trace."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import pytest

from stepline import Stepline

from ..conftest import ProjectFactory

HANGING = {
    "steps/hang_step.py": """
        import threading
        RELEASE = threading.Event()  # the test sets it at the end, so the hung threads can finish
        config = {"type": "event", "name": "Hang", "subscribes": ["hang"],
                  "infrastructure": {"handler": {"timeout": 0.2}, "queue": {"maxRetries": 0}}}
        def handler(input, ctx):
            RELEASE.wait(60)  # a sync call that never returns in time: a stuck socket, a lock
    """,
    "steps/healthy_step.py": """
        config = {"type": "event", "name": "Healthy", "subscribes": ["healthy"]}
        def handler(input, ctx):
            ctx.state.set("healthy", str(input["n"]), True)
    """,
}


async def test_hung_sync_handlers_do_not_starve_the_healthy_ones(make_project: ProjectFactory, tmp_path: Path) -> None:
    app = Stepline(make_project(HANGING), store=f"sqlite:///{tmp_path}/db.sqlite", concurrency=8)
    async with app.lifespan():
        release = sys.modules["steps.hang_step"].RELEASE
        try:
            for n in range(20):  # more hung handlers than the pool has threads
                await app.emit("hang", {"n": n})
            await app.settle(timeout=20)  # each times out and is dead-lettered; its thread hangs on
            assert len(await app.dead_letters()) == 20
            assert app.engine.abandoned_threads == 20
            started = time.monotonic()
            for n in range(10):
                await app.emit("healthy", {"n": n})
            await app.settle(timeout=10)
            assert time.monotonic() - started < 5
            assert await app.engine.state.get_group("healthy") == {str(n): True for n in range(10)}
        finally:
            release.set()


BLOCKING = {
    "steps/blocking_step.py": """
        import time
        config = {"type": "event", "name": "Blocking", "subscribes": ["block"],
                  "infrastructure": {"handler": {"timeout": 0.5}, "queue": {"maxRetries": 0}}}
        async def handler(input, ctx):
            time.sleep(2)  # blocks the event loop: a mistake in an async handler
    """,
}


async def test_a_handler_that_blocks_the_event_loop_is_named_in_the_log_and_the_trace(
    make_project: ProjectFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stepline")
    app = Stepline(make_project(BLOCKING), store=f"sqlite:///{tmp_path}/db.sqlite")
    async with app.lifespan():
        event = await app.emit("block", {})
        await app.settle(timeout=20)
        records = await app.engine.traces.trace(event.trace_id)
        for _ in range(50):  # the watchdog says the loop answers again on its next look, a moment later
            if any("answers again after" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the watchdog did not say when the loop answered again")
    where = "steps/blocking_step.py:5 in handler"
    warnings = [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]
    assert any("step Blocking" in m and where in m for m in warnings), warnings
    [blocked] = [r for r in records if r.kind == "log" and "blocked the event loop" in r.data["message"]]
    assert where in blocked.data["message"] and blocked.step == "Blocking"
    [end] = [r for r in records if r.kind == "end"]
    # The handler returned, but 1.5 s past its timeout: the trace says so, never "ok".
    assert end.data["status"] == "error" and end.data["blocked_at"] == where
    assert end.data["error"].startswith("timed out after 0.5s")
    [dead] = [r for r in records if r.kind == "dead_letter"]
    assert "timed out after 0.5s" in dead.data["error"] and "without yielding" in dead.data["error"]
    assert where in dead.data["error"]
