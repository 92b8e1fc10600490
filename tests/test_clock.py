"""The fake clock: sleepers wake when a test moves time past them, from any thread, and not before."""

from __future__ import annotations

import asyncio
import threading

import pytest

from stepline._clock import SYSTEM_CLOCK, sleep_until_set
from stepline.testing import FakeClock


async def test_sleepers_wake_in_order_once_time_has_passed_them() -> None:
    clock = FakeClock(start=100.0)
    woke: list[str] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(nap("late", 10)), asyncio.create_task(nap("soon", 1))]
    await asyncio.sleep(0.01)
    assert clock.wakes == [101.0, 110.0]
    clock.advance(0.5)
    await asyncio.sleep(0.01)
    assert woke == []
    clock.advance(0.5)
    await asyncio.sleep(0.01)
    assert woke == ["soon"] and clock.time() == 101.0
    clock.advance(60)
    await asyncio.gather(*tasks)
    assert woke == ["soon", "late"] and clock.wakes == []


async def test_time_moved_from_another_thread_wakes_the_loop() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0.01)
    mover = threading.Thread(target=clock.advance, args=(5,))
    mover.start()
    await asyncio.wait_for(sleeper, 2)
    mover.join()


async def test_a_cancelled_sleep_is_forgotten_and_time_never_goes_back() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0.01)
    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)
    assert clock.wakes == []
    clock.advance(10)  # nothing to wake, nothing raised
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


async def test_news_ends_a_sleep_on_either_clock() -> None:
    for clock in (FakeClock(), SYSTEM_CLOCK):
        news = asyncio.Event()
        asyncio.get_running_loop().call_later(0.02, news.set)
        assert await asyncio.wait_for(sleep_until_set(clock, 3600, news), 2) is True
    fake = FakeClock()
    nap = asyncio.create_task(sleep_until_set(fake, 30, asyncio.Event()))
    await asyncio.sleep(0.01)
    fake.advance(30)
    assert await asyncio.wait_for(nap, 2) is False
    assert await sleep_until_set(SYSTEM_CLOCK, 0.01, asyncio.Event()) is False
