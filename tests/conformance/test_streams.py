"""StreamStore conformance: items by (stream, group, id), each change numbered per group in the same write,
a snapshot with the number it is as of, and the change log a subscriber catches up from."""

from __future__ import annotations

import asyncio

from stepline.adapters.base import STREAM_LOG, StreamStore

from .conftest import Adapters


def streams(adapters: Adapters) -> StreamStore:
    store = adapters.opened.streams
    assert store is not None, "every store keeps stream items"
    return store


async def test_set_get_delete_and_the_ops_they_report(adapters: Adapters) -> None:
    s = streams(adapters)
    first = await s.set("todo", "ana", "t1", {"text": "milk"})
    assert (first.op, first.seq, first.data) == ("create", 1, {"text": "milk"})
    second = await s.set("todo", "ana", "t1", {"text": "oat milk"})
    assert (second.op, second.seq) == ("update", 2)
    assert await s.get("todo", "ana", "t1") == {"text": "oat milk"}
    gone = await s.delete("todo", "ana", "t1")
    assert gone is not None and (gone.op, gone.seq, gone.data) == ("delete", 3, None)
    assert await s.delete("todo", "ana", "t1") is None  # nothing changed: no number taken
    assert await s.get("todo", "ana", "t1") is None
    assert (await s.set("todo", "ana", "t2", 1)).seq == 4


async def test_numbers_are_per_group_and_names_do_not_collide(adapters: Adapters) -> None:
    s = streams(adapters)
    await s.set("a:b", "c", "x", 1)
    await s.set("a", "b:c", "x", 2)  # the same characters, split elsewhere
    await s.set("a", "b:c", "y", 3)
    assert await s.snapshot("a:b", "c") == ({"x": 1}, 1)
    assert await s.snapshot("a", "b:c") == ({"x": 2, "y": 3}, 2)
    assert await s.snapshot("never", "written") == ({}, 0)


async def test_a_snapshot_and_the_changes_after_it_miss_nothing_under_concurrent_writes(adapters: Adapters) -> None:
    s = streams(adapters)

    async def writer(w: int) -> None:
        for n in range(50):
            await s.set("live", "g", f"{w}-{n % 5}", {"w": w, "n": n})
            if n % 7 == 0:
                await s.delete("live", "g", f"{w}-{(n + 1) % 5}")

    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    await asyncio.sleep(0)
    items, at = await s.snapshot("live", "g")  # somewhere in the middle of the writes
    await asyncio.gather(*writers)
    changes = await s.changes("live", "g", at)
    assert changes is not None
    assert [c.seq for c in changes] == list(range(at + 1, at + 1 + len(changes)))  # no gap, no repeat
    for change in changes:  # a subscriber applying them ends where the store is
        if change.op == "delete":
            items.pop(change.id, None)
        else:
            items[change.id] = change.data
    final, seq = await s.snapshot("live", "g")
    assert items == final and seq == (changes[-1].seq if changes else at)
    assert await s.changes("live", "g", seq) == []


async def test_changes_past_the_log_ask_for_a_fresh_snapshot(adapters: Adapters) -> None:
    s = streams(adapters)
    for n in range(STREAM_LOG + 5):
        await s.set("big", "g", str(n % 10), n)
    assert await s.changes("big", "g", 2) is None  # its next changes are gone from the log
    kept = await s.changes("big", "g", 5)
    assert kept is not None and len(kept) == STREAM_LOG and kept[0].seq == 6
