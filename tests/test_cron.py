"""Cron steps: schedules in 5 and 6 fields, time zones, and ticks that really fire."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from stepline import Stepline
from stepline.adapters.base import TraceSummary
from stepline.steps.cron import CronSchedule
from stepline.testing import FakeClock

from .conftest import ProjectFactory


def test_five_field_schedule_in_a_time_zone() -> None:
    schedule = CronSchedule("0 9 * * 1", "Europe/Berlin")  # Mondays 09:00 in Berlin
    tick = schedule.next_after(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))  # a Tuesday
    assert tick.isoformat() == "2026-11-30T09:00:00+01:00"
    assert tick.astimezone(UTC).hour == 8


def test_six_field_schedule_has_seconds_first() -> None:
    schedule = CronSchedule("*/15 * * * * *")
    tick = schedule.next_after(datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC))
    assert tick == datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC)


def test_the_tick_at_or_before_a_moment_is_the_tick_itself() -> None:
    every_second = CronSchedule("* * * * * *")
    moment = datetime(2026, 1, 1, 0, 0, 7, 654321, tzinfo=UTC)
    assert every_second.last_at_or_before(moment) == datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
    every_minute = CronSchedule("* * * * *")
    assert every_minute.last_at_or_before(moment) == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


async def test_cron_step_fires_with_its_own_trace(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/tick_step.py": """
            config = {"type": "cron", "name": "Tick", "cron": "* * * * * *", "emits": ["ticked"]}
            async def handler(ctx):
                ctx.logger.info("tick")
                await ctx.emit("ticked", {"trace": ctx.trace_id})
        """,
            "steps/tock_step.py": """
            config = {"type": "event", "name": "Tock", "subscribes": ["ticked"]}
            async def handler(input, ctx):
                await ctx.state.set("ticks", ctx.trace_id, input["trace"])
        """,
        }
    )
    start = datetime(2026, 12, 1, 9, 0, 0, 500_000, tzinfo=UTC).timestamp()
    clock = FakeClock(start)
    sl = Stepline(root, clock=clock)
    async with sl.lifespan():
        await asleep_until(clock, start + 0.5)  # the scheduler waits for 09:00:01
        assert await sl.engine.state.get_group("ticks") == {}
        clock.advance(0.5)
        await until(lambda: sl.engine.state.get_group("ticks"))
        await sl.settle()
        ticks = await sl.engine.state.get_group("ticks")
        trace_id, seen = next(iter(ticks.items()))
        assert trace_id == seen  # the event handler ran under the trace the tick started
        records = await sl.engine.traces.trace(trace_id)
        assert records[0].kind == "trigger" and records[0].data["entry"] == "cron Tick"


async def test_a_failing_cron_handler_is_recorded_and_the_schedule_goes_on(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/bad_tick_step.py": """
            count = {"n": 0}
            config = {"type": "cron", "name": "BadTick", "cron": "* * * * * *"}
            async def handler(ctx):
                count["n"] += 1
                raise RuntimeError(f"tick {count['n']} failed")
        """,
        }
    )
    clock = FakeClock()
    sl = Stepline(root, store="memory://", clock=clock)

    async def failures() -> list[TraceSummary]:
        await sl.engine.flush()
        return [s for s in await sl.engine.traces.recent() if s.errors]

    async def failed_twice() -> bool:
        return len(await failures()) >= 2

    async with sl.lifespan():
        for _ in range(2):
            await asleep_until(clock, math.floor(clock.now) + 1)  # the scheduler, till the next second
            clock.advance(1)
        await until(failed_twice)
        assert all(s.entry == "cron BadTick" for s in await failures())


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


async def asleep_until(clock: FakeClock, moment: float) -> None:
    """Until a task (the scheduler) sleeps on `clock` till `moment`: moving the clock there wakes it."""
    async with asyncio.timeout(5):
        while True:
            if any(abs(wake - moment) < 1e-3 for wake in clock.wakes):
                return
            await asyncio.sleep(0.005)
