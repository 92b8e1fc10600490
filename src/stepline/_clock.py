"""The one clock the runtime reads, so that tests can move time instead of waiting for it.

What it governs is time as the system's rules see it: event timestamps, delays and retry backoff, leases,
idempotency windows, approval timeouts, cron ticks, how often stop marks are read, trace retention; and the
sleeps of the loops that wait for those moments. What it does not govern is the measure of real work: a
handler's timeout, the duration of a run or an LLM call, a wait for a lock. Those stay on the process's
own monotonic clock, since a fake clock cannot make real work faster.

    clock = FakeClock()
    app = Stepline(root, clock=clock)
    ...
    clock.advance(0.6)        # an approval's 0.5 s timeout has passed, at once
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...


class SystemClock:
    """The real time."""

    # The C function itself, not a method wrapping it: read several times per request, on the hot path.
    time = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


async def sleep_until_set(clock: Clock, seconds: float, event: asyncio.Event) -> bool:
    """Sleep `seconds` on `clock`, or less when `event` is set first; True when the event ended it.

    The loops that wait for a moment (the next cron tick, the next delayed delivery) also wait for news
    that changes the plan; they re-check the clock when they wake, so an early wake-up costs nothing."""
    if event.is_set():
        return True
    if isinstance(clock, SystemClock):  # the common case, without the two tasks below
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False
        return True
    news = asyncio.ensure_future(event.wait())
    nap = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({news, nap}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        news.cancel()
        nap.cancel()
    return event.is_set()


class FakeClock:
    """Time that moves only when a test says so. `sleep` waits until `advance` has moved the clock past it.

    `advance` may be called from any thread (a test's, or a sync handler's); the sleepers it wakes run on
    their own event loops."""

    def __init__(self, start: float | None = None) -> None:
        # Frozen at the real time by default: stamps look current, and cron schedules fall on real dates.
        self.now = time.time() if start is None else start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), wake))
        await wake

    @property
    def wakes(self) -> list[float]:
        """When the tasks asleep on this clock wake, soonest first: a test waits for a task to be asleep
        (the scheduler, till its next tick) before it moves the clock."""
        with self._lock:
            return sorted(when for when, _, wake in self._sleepers if not wake.done())

    def advance(self, seconds: float) -> None:
        """Move the clock on by `seconds` and wake every sleeper due by then; they run at the next await."""
        if seconds < 0:
            raise ValueError("time does not go back")
        with self._lock:
            self.now += seconds
            due = []
            while self._sleepers and self._sleepers[0][0] <= self.now:
                due.append(heapq.heappop(self._sleepers)[2])
        for wake in due:
            if not wake.done():  # not a cancelled sleep
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
                    wake.get_loop().call_soon_threadsafe(_wake, wake)


def _wake(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)
