"""CronLock conformance: one claim per tick."""

from __future__ import annotations

import asyncio

from .conftest import Adapters


async def test_a_tick_is_claimed_once(adapters: Adapters) -> None:
    lock = adapters.cron
    assert await lock.last_tick("Nightly") is None
    results = await asyncio.gather(*(lock.claim_tick("Nightly", 100.0) for _ in range(10)))
    assert results.count(True) == 1
    assert await lock.claim_tick("Other", 100.0)  # steps are independent
    assert not await lock.claim_tick("Nightly", 50.0)  # an older tick never fires after a newer one
    assert await lock.claim_tick("Nightly", 160.0)
    assert await lock.last_tick("Nightly") == 160.0
