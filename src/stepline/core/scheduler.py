"""Publishes cron ticks on their schedules: each tick once across all workers, following the project through reloads.

A tick is not run here: it becomes a delivery of the cron step (see `Engine.publish_cron`), so it gets
the lease, timeout, retries and dead letters of any event, and a tick whose worker dies runs again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from stepline._clock import sleep_until_set
from stepline.adapters.base import CronLock
from stepline.core.engine import Engine
from stepline.steps.config import CronConfig
from stepline.steps.project import Step

log = logging.getLogger("stepline.cron")


class CronScheduler:
    def __init__(self, engine: Engine, lock: CronLock) -> None:
        self.engine = engine
        self.lock = lock
        self._next: dict[tuple[str, str, str], datetime] = {}
        self._changed = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def project_changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        try:
            await self._schedule()
        finally:  # stopped: ticks still being published (retrying a failing store) stop with it
            for task in list(self._running):
                task.cancel()

    async def _schedule(self) -> None:
        while True:
            try:
                await self._catch_up()
                break
            except Exception as exc:
                await asyncio.sleep(self.engine.health.failed("cron", exc, "ticks are published once it recovers"))
        self.engine.health.recovered("cron")
        while True:
            due_at = self._plan()
            if due_at is None:
                await self._changed.wait()
                self._changed.clear()
                continue
            delay = (due_at - self._now()).total_seconds()
            if delay > 0 and await sleep_until_set(self.engine.clock, delay, self._changed):
                self._changed.clear()
                continue
            self._fire_due()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.engine.clock.time(), UTC)

    async def _catch_up(self) -> None:
        """Run once, now, each tick missed while no worker ran (for steps with `"missed": "once"`)."""
        now = self._now()
        for step in self.engine.project.cron_steps:
            if step.config.missed != "once":
                continue
            last = await self.lock.last_tick(step.name)
            newest = step.config.schedule.last_at_or_before(now)
            if last is not None and last < newest.timestamp():
                log.info(
                    "running a missed tick of %s (due %s)", step.name, newest.isoformat(), extra={"step": step.name}
                )
                self._start(step, newest)

    def _plan(self) -> datetime | None:
        """Keep the next tick of every cron step (kept across reloads unless its schedule changed)."""
        now = self._now()
        planned: dict[tuple[str, str, str], datetime] = {}
        for step in self.engine.project.cron_steps:
            key = (step.name, step.config.cron, step.config.timezone)
            planned[key] = self._next.get(key) or step.config.schedule.next_after(now)
        self._next = planned
        return min(planned.values(), default=None)

    def _fire_due(self) -> None:
        now = self._now()
        for key, when in list(self._next.items()):
            if when > now:
                continue
            found = self.engine.project.steps.get(key[0])
            step = found.of(CronConfig) if found is not None else None
            if step is None:
                continue
            self._start(step, when)
            self._next[key] = step.config.schedule.next_after(max(now, when))

    def _start(self, step: Step[CronConfig], tick: datetime) -> None:
        task = asyncio.create_task(self._fire(step, tick))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _fire(self, step: Step[CronConfig], tick: datetime) -> None:
        # Every worker sees every tick and publishes it; the idempotency key lets one through. The lock
        # only remembers the newest tick, for the ticks missed while nothing ran.
        until = step.config.schedule.next_after(tick)  # a tick not published by its successor's time is missed
        while True:
            try:
                trace_id = await self.engine.publish_cron(step, tick.timestamp())
                await self.lock.claim_tick(step.name, tick.timestamp())
            except Exception as exc:
                pause = self.engine.health.failed("cron", exc, "the tick is published once the store takes it")
                if self._now() + timedelta(seconds=pause) >= until:
                    log.error(
                        "the tick of %s due %s was not published before the next one: skipped",
                        step.name,
                        tick.isoformat(),
                        extra={"step": step.name},
                    )
                    return
                await asyncio.sleep(pause)
                continue
            self.engine.health.recovered("cron")
            if trace_id is not None:
                log.debug("published the tick of %s due %s", step.name, tick.isoformat(), extra={"step": step.name})
            return
