"""EventQueue conformance: fan-out copies, leases, retries, dead letters and replay."""

from __future__ import annotations

import time

from stepline._ids import new_id
from stepline.adapters.base import ClaimSpec, Event

from .conftest import Adapters

LEASES = {"a": ClaimSpec(30.0), "b": ClaimSpec(30.0)}
NOW_A = {"a": 0.0}  # publish to step "a", no delay


def event(topic: str = "t", data: object = None) -> Event:
    return Event(new_id(), topic, data, new_id(), None, time.time())


async def test_fan_out_gives_each_subscriber_its_own_delivery(adapters: Adapters) -> None:
    q = adapters.queue
    e = event(data={"x": 1})
    await q.publish(e, dict.fromkeys(["a", "b"], 0.0))
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
        await q.publish(e, dict.fromkeys(["a", "other"], 0.0))
    first = await q.claim({"a": ClaimSpec(30.0)}, 3)
    assert [d.event.data for d in first] == [0, 1, 2]
    rest = await q.claim({"a": ClaimSpec(30.0)}, 10)
    assert [d.event.data for d in rest] == [3, 4]
    stats = await q.stats()
    assert (stats.ready, stats.in_flight) == (5, 5)  # the "other" copies wait for their step


async def test_ack_removes_the_delivery(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [d] = await q.claim(LEASES, 1)
    await q.ack(d)
    adapters.clock.advance(3600)
    assert await q.claim(LEASES, 1) == []
    assert (await q.stats()).pending == 0


async def test_expired_lease_is_redelivered_with_the_next_attempt(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [d] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    adapters.clock.advance(4.9)
    assert await q.claim({"a": ClaimSpec(5.0)}, 1) == []
    adapters.clock.advance(0.2)
    [again] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    assert again.id == d.id and again.attempt == 2


async def test_retry_waits_for_its_delay(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [d] = await q.claim(LEASES, 1)
    await q.retry(d, 10.0, "boom")
    assert await q.claim(LEASES, 1) == []
    assert (await q.stats()).delayed == 1
    adapters.clock.advance(10.0)
    [again] = await q.claim(LEASES, 1)
    assert again.id == d.id and again.attempt == 2


async def test_delayed_publish(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), {"a": 5.0})
    assert await q.claim(LEASES, 1) == []
    adapters.clock.advance(5.0)
    assert len(await q.claim(LEASES, 1)) == 1


async def test_dead_letter_and_replay(adapters: Adapters) -> None:
    q = adapters.queue
    e = event(data={"order": 7})
    await q.publish(e, NOW_A)
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


async def test_a_stale_attempt_cannot_ack_a_redelivered_delivery(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [first] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    adapters.clock.advance(6)
    [second] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    await q.ack(first)  # the first worker finished late: its lease is gone
    assert (await q.stats()).in_flight == 1
    await q.retry(first, 0, "late")
    await q.dead_letter(first, "late", None)
    assert await q.dead_letters() == []
    await q.ack(second)
    assert (await q.stats()).pending == 0


async def test_idempotency_key_accepts_an_event_once_within_the_window(adapters: Adapters) -> None:
    q = adapters.queue
    assert await q.publish(event(data=1), NOW_A, idempotency_key="order-7", idempotency_window=60)
    assert not await q.publish(event(data=2), NOW_A, idempotency_key="order-7", idempotency_window=60)
    assert await q.publish(event(data=3), NOW_A, idempotency_key="order-8", idempotency_window=60)
    adapters.clock.advance(61)
    assert await q.publish(event(data=4), NOW_A, idempotency_key="order-7", idempotency_window=60)
    claimed = await q.claim(LEASES, 10)
    assert [d.event.data for d in claimed] == [1, 3, 4]


def grouped(group: str | None, data: object) -> Event:
    return Event(new_id(), "t", data, new_id(), None, time.time(), group)


async def test_fifo_keeps_order_within_a_group_and_runs_groups_in_parallel(adapters: Adapters) -> None:
    q = adapters.queue
    fifo = {"a": ClaimSpec(30.0, fifo=True)}
    for i in range(3):
        await q.publish(grouped("g1", f"g1-{i}"), NOW_A)
        await q.publish(grouped("g2", f"g2-{i}"), NOW_A)
    first = await q.claim(fifo, 10)
    assert [d.event.data for d in first] == ["g1-0", "g2-0"]  # one at a time per group
    assert await q.claim(fifo, 10) == []
    g1, g2 = first
    await q.retry(g1, 5.0, "boom")  # a failing message holds its group...
    await q.ack(g2)
    [next_g2] = await q.claim(fifo, 10)
    assert next_g2.event.data == "g2-1"  # ...but not the others
    adapters.clock.advance(5.0)
    [again] = await q.claim(fifo, 10)
    assert again.event.data == "g1-0" and again.attempt == 2
    await q.dead_letter(again, "gave up", None)  # dead-lettered: the group moves on, nothing skipped
    [after] = await q.claim(fifo, 10)
    assert after.event.data == "g1-1"


async def test_fifo_does_not_hold_a_standard_step(adapters: Adapters) -> None:
    q = adapters.queue
    for i in range(3):
        await q.publish(grouped("g", i), NOW_A)
    assert len(await q.claim(LEASES, 10)) == 3


async def test_concurrency_cap_counts_leases_already_out(adapters: Adapters) -> None:
    q = adapters.queue
    for i in range(5):
        await q.publish(event(data=i), dict.fromkeys(["a", "b"], 0.0))
    capped = {"a": ClaimSpec(30.0, concurrency=2), "b": ClaimSpec(30.0)}
    first = await q.claim(capped, 100)
    assert sorted(d.step for d in first).count("a") == 2
    assert [d.step for d in first].count("b") == 5
    assert await q.claim(capped, 100) == []
    await q.ack(next(d for d in first if d.step == "a"))
    [more] = await q.claim(capped, 100)
    assert more.step == "a" and more.event.data == 2


async def test_purge_dead_letters(adapters: Adapters) -> None:
    q = adapters.queue
    for i in range(3):
        await q.publish(event(data=i), NOW_A)
    for d in await q.claim(LEASES, 10):
        await q.dead_letter(d, "x", None)
    dead = await q.dead_letters()
    assert len(dead) == 3
    assert await q.purge([dead[0].delivery_id, "unknown"]) == 1
    assert await q.purge() == 2
    assert await q.dead_letters() == []


async def test_an_attempt_whose_lease_ran_out_comes_back_lost(adapters: Adapters) -> None:
    """A lease that runs out means the attempt never finished (its worker died, or stopped renewing):
    the next claim says so, and counts it."""
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [first] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    assert first.lost is False
    adapters.clock.advance(6)
    [second] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    assert (second.id, second.attempt, second.lost) == (first.id, 2, True)
    await q.retry(second, 0.0, "failed, and said so")  # a proper release: the next attempt is not lost
    [third] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    assert (third.attempt, third.lost) == (3, False)


async def test_renewing_a_lease_keeps_a_live_run_from_being_handed_out_again(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [d] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    for _ in range(5):  # 20 s of a 5 s lease, renewed every 4 s
        adapters.clock.advance(4)
        assert await q.renew([(d, 5.0)]) == []
        assert await q.claim({"a": ClaimSpec(5.0)}, 1) == []
    assert (await q.stats()).in_flight == 1
    adapters.clock.advance(6)  # no renewal: the lease runs out
    [again] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    assert again.attempt == 2
    # The old attempt's renewal changes nothing and reports its lease as lost; the new one's holds.
    assert await q.renew([(d, 5.0), (again, 5.0)]) == [d]
    await q.ack(again)
    assert await q.renew([(again, 5.0)]) == [again]  # settled: nothing to renew


async def test_stats_count_deliveries_delayed_past_a_horizon_apart(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), {"a": 0.0})
    await q.publish(event(), {"a": 10.0})
    await q.publish(event(), {"a": 86400.0})  # an approval's timeout, a day away
    everything = await q.stats()
    assert (everything.ready, everything.delayed, everything.later, everything.pending) == (1, 2, 0, 3)
    soon = await q.stats(horizon=30.0)
    assert (soon.ready, soon.delayed, soon.later, soon.pending) == (1, 1, 1, 2)


async def test_a_retry_that_does_not_count_gives_the_attempt_back(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [d] = await q.claim(LEASES, 1)
    await q.retry(d, 0.0, "the store was down", counts=False)
    [again] = await q.claim(LEASES, 1)
    assert (again.id, again.attempt, again.lost) == (d.id, 1, False)
    await q.retry(again, 0.0, "the handler failed")
    assert (await q.claim(LEASES, 1))[0].attempt == 2


async def test_backlog_counts_a_steps_deliveries_until_they_leave_the_queue(adapters: Adapters) -> None:
    q = adapters.queue
    for i in range(3):
        await q.publish(event(data=i), {"a": 0.0, "b": 60.0})
    assert (await q.backlog("a"), await q.backlog("b"), await q.backlog("c")) == (3, 3, 0)
    first, second, third = await q.claim({"a": ClaimSpec(30.0)}, 3)
    assert await q.backlog("a") == 3  # leased: still in the queue
    await q.ack(first)
    await q.retry(second, 10.0, "boom")  # delayed for its retry: still in it
    await q.dead_letter(third, "gave up", None)
    assert await q.backlog("a") == 1
    assert await q.replay(third.id)
    assert await q.backlog("a") == 2


async def test_a_suspended_run_gives_its_attempt_back_and_comes_again_at_its_time(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(data="sleeper"), NOW_A)
    [d] = await q.claim(LEASES, 1)
    assert not d.resumed
    await q.suspend(d, adapters.clock.time() + 60)
    assert await q.claim(LEASES, 1) == []
    assert await q.backlog("a") == 0  # a suspended run waits for its time, not for a worker
    stats = await q.stats(horizon=30)
    assert (stats.in_flight, stats.ready, stats.later) == (0, 0, 1)
    adapters.clock.advance(61)
    [again] = await q.claim(LEASES, 1)
    assert (again.id, again.attempt, again.resumed, again.lost) == (d.id, 1, True, False)
    assert await q.backlog("a") == 1
    await q.ack(again)
    assert (await q.stats()).pending == 0


async def test_wake_readies_a_suspended_run_and_is_kept_for_one_still_running(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(data="waiter"), NOW_A)
    [d] = await q.claim(LEASES, 1)
    await q.suspend(d, None)  # until woken
    adapters.clock.advance(10**6)
    assert await q.claim(LEASES, 1) == []
    assert await q.wake(d.id)
    [again] = await q.claim(LEASES, 1)
    assert again.id == d.id and again.resumed
    # Woken while it still runs (the event came just before it suspended): its suspend does not hold it.
    assert await q.wake(d.id)
    await q.suspend(again, None)
    [third] = await q.claim(LEASES, 1)
    assert third.id == d.id and third.attempt == 1
    await q.suspend(third, None)  # the earlier wake was used up
    assert await q.claim(LEASES, 1) == []
    assert not await q.wake("no-such-delivery")


async def test_a_stale_attempt_cannot_suspend(adapters: Adapters) -> None:
    q = adapters.queue
    await q.publish(event(), NOW_A)
    [d] = await q.claim({"a": ClaimSpec(5.0)}, 1)
    adapters.clock.advance(6)  # its lease ran out; the next claim hands it out again
    [again] = await q.claim(LEASES, 1)
    await q.suspend(d, adapters.clock.time() + 3600)  # the old attempt: no effect
    assert (await q.stats()).in_flight == 1
    await q.ack(again)
    assert (await q.stats()).pending == 0
