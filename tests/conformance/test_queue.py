"""EventQueue conformance: fan-out copies, leases, retries, dead letters and replay."""

from __future__ import annotations

import time

from stepline._ids import new_id
from stepline._protocols import Event

from .conftest import Adapters

LEASES = {"a": 30.0, "b": 30.0}


def event(topic: str = "t", data: object = None) -> Event:
    return Event(new_id(), topic, data, new_id(), None, time.time())


async def test_fan_out_gives_each_subscriber_its_own_delivery(adapters: Adapters) -> None:
    q = adapters.queue
    e = event(data={"x": 1})
    await q.publish(e, ["a", "b"])
    claimed = await q.claim(LEASES, 10)
    assert sorted(d.step for d in claimed) == ["a", "b"]
    assert {d.event.id for d in claimed} == {e.id}
    assert all(d.attempt == 1 and d.event.data == {"x": 1} for d in claimed)
    assert len({d.id for d in claimed}) == 2
    assert await q.claim(LEASES, 10) == []  # leased: not handed out twice


async def test_claim_respects_limit_order_and_known_steps(adapters: Adapters) -> None:
    q = adapters.queue
    events = [event(data=i) for i in range(5)]
    for e in events:
        await q.publish(e, ["a", "other"])
    first = await q.claim({"a": 30.0}, 3)
    assert [d.event.data for d in first] == [0, 1, 2]
    rest = await q.claim({"a": 30.0}, 10)
    assert [d.event.data for d in rest] == [3, 4]
    stats = await q.stats()
    assert (stats.ready, stats.in_flight) == (5, 5)  # the "other" copies wait for their step


async def test_ack_removes_the_delivery(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), ["a"])
    [d] = await q.claim(LEASES, 1)
    await q.ack(d)
    adapters.clock.advance(3600)
    assert await q.claim(LEASES, 1) == []
    assert (await q.stats()).pending == 0


async def test_expired_lease_is_redelivered_with_the_next_attempt(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), ["a"])
    [d] = await q.claim({"a": 5.0}, 1)
    adapters.clock.advance(4.9)
    assert await q.claim({"a": 5.0}, 1) == []
    adapters.clock.advance(0.2)
    [again] = await q.claim({"a": 5.0}, 1)
    assert again.id == d.id and again.attempt == 2


async def test_retry_waits_for_its_delay(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), ["a"])
    [d] = await q.claim(LEASES, 1)
    await q.retry(d, 10.0, "boom")
    assert await q.claim(LEASES, 1) == []
    assert (await q.stats()).delayed == 1
    adapters.clock.advance(10.0)
    [again] = await q.claim(LEASES, 1)
    assert again.id == d.id and again.attempt == 2


async def test_delayed_publish(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), ["a"], delay=5.0)
    assert await q.claim(LEASES, 1) == []
    adapters.clock.advance(5.0)
    assert len(await q.claim(LEASES, 1)) == 1


async def test_dead_letter_and_replay(adapters: Adapters) -> None:
    q = adapters.queue
    e = event(data={"order": 7})
    await q.publish(e, ["a"])
    [d] = await q.claim(LEASES, 1)
    await q.dead_letter(d, "ValueError: no", "Traceback ...")
    assert await q.claim(LEASES, 1) == []
    [dead] = await q.dead_letters()
    assert (dead.delivery_id, dead.step, dead.attempts, dead.error) == (d.id, "a", 1, "ValueError: no")
    assert dead.event == e and dead.traceback == "Traceback ..."
    assert (await q.stats()).dead == 1
    assert await q.replay(d.id) is True
    assert await q.replay(d.id) is False
    [again] = await q.claim(LEASES, 1)
    assert again.id == d.id and again.attempt == 1 and again.event.data == {"order": 7}
    assert await q.dead_letters() == []
