"""A claim whose reply is lost (the connection drops after the script ran on the server): the worker cannot
tell what it leased, so the next claim gives back the leases it never heard of, attempts uncounted, instead
of leaving them until their lease runs out (the handler's timeout and more)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from stepline._errors import StoreUnavailableError
from stepline.adapters import open_store
from stepline.adapters.base import ClaimSpec, Event, StoreOptions

SPECS = {"a": ClaimSpec(lease=3600.0)}


async def test_leases_of_a_claim_whose_reply_was_lost_go_back_at_the_next_claim(
    redis_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapters = open_store(redis_store, StoreOptions(root=tmp_path))
    queue: Any = adapters.queue
    try:
        for n in range(3):
            await queue.publish(Event(f"e{n}", "t", n, "tr", None, time.time()), {"a": 0.0})
        [kept] = await queue.claim(SPECS, 1)  # held, and known: it must stay leased
        real = queue._conn.script

        async def lost_reply(name: str, *args: Any) -> Any:
            result = await real(name, *args)
            if name == "CLAIM":
                raise StoreUnavailableError("the connection dropped before the reply")
            return result

        monkeypatch.setattr(queue._conn, "script", lost_reply)
        with pytest.raises(StoreUnavailableError):
            await queue.claim(SPECS, 10)  # it ran: the other two are leased to this worker, unknown to it
        monkeypatch.setattr(queue._conn, "script", real)
        again = await queue.claim(SPECS, 10)
        assert sorted(d.event.data for d in again) == [1, 2]  # at once, not in an hour
        assert all(d.attempt == 1 and not d.lost for d in again)  # they never ran: no attempt counted
        assert await queue.claim(SPECS, 10) == []  # the known lease was left alone
        await queue.ack(kept)
        for d in again:
            await queue.ack(d)
        assert (await queue.stats()).pending == 0
    finally:
        await adapters.close()
