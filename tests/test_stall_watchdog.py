"""A delivery loop that stops going round (a claim or a wait on a connection that never answers: the
silent stall Celery users report after reconnects) is noticed and started again; queued work then runs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stepline import load_project
from stepline.adapters.memory import MemoryEventQueue, MemoryStateStore, MemoryTraceStore
from stepline.core.engine import Engine

from .conftest import ProjectFactory


class HangingOnce(MemoryEventQueue):
    """Its first wait never returns, as a read on a half-open connection would not."""

    def __init__(self) -> None:
        super().__init__()
        self.hung = False

    async def wait(self, timeout: float) -> None:
        if not self.hung:
            self.hung = True
            await asyncio.Event().wait()
        await super().wait(timeout)


async def test_a_stalled_delivery_loop_is_started_again(
    make_project: ProjectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(
        {
            "steps/work_step.py": """
            config = {"type": "event", "name": "Work", "subscribes": ["work"]}
            async def handler(input, ctx):
                await ctx.state.set("done", "work", True)
        """
        }
    )
    queue = HangingOnce()
    state = MemoryStateStore()
    engine = Engine(
        load_project(root), queue=queue, state=state, traces=MemoryTraceStore(), control=MemoryStateStore(),
        stall_after=0.4,
    )  # fmt: skip
    await engine.start()
    try:
        await asyncio.sleep(0.05)
        assert queue.hung  # the loop is stuck in its wait
        # Published behind the loop's back (another process's emit): nothing wakes the stuck wait.
        await engine.emit_external("work", {})
        for _ in range(250):  # 5 s
            if await state.get("done", "work"):
                break
            await asyncio.sleep(0.02)
        assert await state.get("done", "work") is True
        assert "delivery loop is failing" in caplog.text and "it was started again" in caplog.text
        await asyncio.sleep(0.1)
        assert not [p for p in engine.health.problems() if p.component == "delivery loop"]  # it recovered
    finally:
        await engine.stop()


async def test_a_loop_waiting_for_a_free_slot_is_not_taken_for_a_stall(
    make_project: ProjectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(
        {
            "steps/slow_step.py": """
            import asyncio
            config = {"type": "event", "name": "Slow", "subscribes": ["slow"]}
            async def handler(input, ctx):
                await asyncio.sleep(1.2)
        """
        }
    )
    engine = Engine(
        load_project(root), queue=MemoryEventQueue(), state=MemoryStateStore(), traces=MemoryTraceStore(),
        control=MemoryStateStore(), concurrency=1, stall_after=0.4,
    )  # fmt: skip
    caplog.set_level(logging.WARNING)
    await engine.start()
    try:
        await engine.emit_external("slow", {})
        await engine.settle(timeout=10)
        assert "delivery loop" not in caplog.text
    finally:
        await engine.stop()
