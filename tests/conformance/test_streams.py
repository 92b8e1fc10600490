"""StreamStore conformance: items by (stream, group, id), each change numbered per group in the same write,
a snapshot with the number it is as of, and the change log a subscriber catches up from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stepline import adapters as stores
from stepline.adapters.base import STREAM_LOG, StoreOptions, StreamChange, StreamEvent, StreamStore
from tests.stores import SHARED_STORES, StoreKind

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
    assert await s.changes("live", "g", seq + 1) is None  # a number not reached: the store was reset
    assert await s.changes("never", "g", 0) == [] and await s.changes("never", "g", 3) is None


async def test_changes_past_the_log_ask_for_a_fresh_snapshot(adapters: Adapters) -> None:
    s = streams(adapters)
    for n in range(STREAM_LOG + 5):
        await s.set("big", "g", str(n % 10), n)
    assert await s.changes("big", "g", 2) is None  # its next changes are gone from the log
    kept = await s.changes("big", "g", 5)
    assert kept is not None and len(kept) == STREAM_LOG and kept[0].seq == 6


async def _next_batch(listening: AsyncIterator[list[StreamChange | StreamEvent]]) -> list[StreamChange | StreamEvent]:
    async with asyncio.timeout(5):
        while True:
            batch = await anext(listening)
            if batch:
                return batch


@pytest.mark.parametrize("kind", SHARED_STORES, ids=str)
async def test_what_one_process_writes_every_other_hears(kind: StoreKind, tmp_path: Path) -> None:
    """Two stores on one backend stand for two processes: each hears the other's changes and events, in
    order, and not its own."""
    url = kind.url(tmp_path)
    one, two = (stores.open_store(url, StoreOptions(root=tmp_path)) for _ in range(2))
    try:
        a, b = one.streams, two.streams
        assert a is not None and b is not None
        heard = b.listen()
        assert await anext(heard) == []  # listening from here on
        own = a.listen()
        assert await anext(own) == []
        await a.set("s", "g", "x", {"v": 1})
        await a.set("s", "g", "x", {"v": 2})
        await a.delete("s", "g", "x")
        await a.send(StreamEvent("s", "g", None, {"type": "ping", "data": 1}))
        got: list[StreamChange | StreamEvent] = []
        while len(got) < 4:
            got += await _next_batch(heard)
        assert got == [
            StreamChange("s", "g", "x", "create", {"v": 1}, 1),
            StreamChange("s", "g", "x", "update", {"v": 2}, 2),
            StreamChange("s", "g", "x", "delete", None, 3),
            StreamEvent("s", "g", None, {"type": "ping", "data": 1}),
        ]
        await b.set("s", "g", "y", {"v": 3})  # the writer hears the other's, never its own
        assert await _next_batch(own) == [StreamChange("s", "g", "y", "create", {"v": 3}, 4)]
        await heard.aclose()
        await own.aclose()
    finally:
        await one.close()
        await two.close()
        kind.cleanup(url)


async def test_groups_lists_each_group_with_its_items_and_number(adapters: Adapters) -> None:
    s = streams(adapters)
    await s.set("st", "b", "x", {"n": 1})
    await s.set("st", "b", "y", {"n": 2})
    await s.set("st", "a", "x", {"n": 3})
    await s.delete("st", "a", "x")
    await s.set("other", "c", "x", {})
    assert await s.groups("st") == [("a", 0, 2), ("b", 2, 2)]
    assert await s.groups("never") == []
