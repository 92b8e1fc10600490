"""TraceStore conformance."""

from __future__ import annotations

from stepline.adapters.base import TraceRecord

from .conftest import Adapters


async def test_records_come_back_in_order_by_trace(adapters: Adapters) -> None:
    t = adapters.traces
    await t.append(
        [
            TraceRecord("t1", "trigger", "Api", 1.0, {"entry": "POST /x"}),
            TraceRecord("t2", "trigger", None, 1.5, {"entry": "emit y"}),
            TraceRecord("t1", "start", "Api", 2.0),
        ]
    )
    await t.append([TraceRecord("t1", "end", "Api", 3.0, {"status": "error", "error": "boom"})])
    records = await t.trace("t1")
    assert [r.kind for r in records] == ["trigger", "start", "end"]
    assert records[2].data == {"status": "error", "error": "boom"}
    assert await t.trace("none") == []


async def test_recent_summaries_newest_first(adapters: Adapters) -> None:
    t = adapters.traces
    await t.append([TraceRecord("old", "trigger", "A", 1.0, {"entry": "cron A"})])
    await t.append(
        [
            TraceRecord("new", "trigger", "B", 2.0, {"entry": "GET /b"}),
            TraceRecord("new", "end", "B", 2.5, {"status": "error"}),
        ]
    )
    recent = await t.recent(10)
    assert [s.trace_id for s in recent] == ["new", "old"]
    assert (recent[0].entry, recent[0].records, recent[0].errors, recent[0].last_at) == ("GET /b", 2, 1, 2.5)
    assert [s.trace_id for s in await t.recent(1)] == ["new"]


async def test_prune_drops_whole_old_traces(adapters: Adapters) -> None:
    t = adapters.traces
    await t.append([TraceRecord("old", "trigger", "A", 1.0, {"entry": "x"}), TraceRecord("old", "end", "A", 2.0)])
    await t.append([TraceRecord("new", "trigger", "A", 10.0, {"entry": "y"})])
    assert await t.prune(older_than=5.0) == 1
    assert await t.trace("old") == []
    assert [s.trace_id for s in await t.recent()] == ["new"]


async def test_a_trace_written_in_parts_reads_as_one(adapters: Adapters) -> None:
    t = adapters.traces
    await t.append(
        [TraceRecord("a", "trigger", "Api", 1.0, {"entry": "POST /a"}), TraceRecord("a", "start", "Api", 1.1)]
    )
    await t.append([TraceRecord("b", "trigger", None, 2.0, {"entry": "emit b"})])
    await t.append([TraceRecord("a", "end", "Api", 3.0, {"status": "error"}), TraceRecord("b", "log", "B", 3.5)])
    await t.append([TraceRecord("a", "end", "A2", 4.0, {"status": "ok"})])
    assert [r.kind for r in await t.trace("a")] == ["trigger", "start", "end", "end"]
    recent = await t.recent()
    # Newest by start: a trace's later parts do not move it up the list.
    assert [s.trace_id for s in recent] == ["b", "a"]
    summary = recent[1]
    assert (summary.entry, summary.started_at, summary.last_at, summary.records, summary.errors) == (
        "POST /a",
        1.0,
        4.0,
        4,
        1,
    )


async def test_prune_keeps_a_trace_with_any_recent_record(adapters: Adapters) -> None:
    t = adapters.traces
    await t.append([TraceRecord("long", "trigger", "A", 1.0, {"entry": "x"})])
    await t.append([TraceRecord("short", "trigger", "A", 2.0, {"entry": "y"})])
    await t.append([TraceRecord("long", "end", "A", 20.0, {"status": "ok"})])
    assert await t.prune(older_than=10.0) == 1
    assert [r.kind for r in await t.trace("long")] == ["trigger", "end"]
    assert await t.trace("short") == []
    assert await t.prune(older_than=10.0) == 0


async def test_a_prune_keeps_a_trace_with_a_new_part_among_old_ones(adapters: Adapters) -> None:
    t = adapters.traces
    for n in range(20):  # interleaved: the kept trace has a part among the old ones and one after
        await t.append([TraceRecord(f"old{n}", "trigger", "A", 1.0 + n / 100, {"entry": "x"})])
        if n == 5:
            await t.append([TraceRecord("kept", "trigger", "A", 1.05, {"entry": "y"})])
    await t.append([TraceRecord("kept", "end", "A", 50.0, {"status": "ok"})])
    await t.append([TraceRecord("new", "trigger", "A", 60.0, {"entry": "z"})])
    assert await t.prune(older_than=10.0) == 20
    assert [s.trace_id for s in await t.recent()] == ["new", "kept"]
    assert [r.kind for r in await t.trace("kept")] == ["trigger", "end"]
    assert await t.prune(older_than=10.0) == 0


async def test_a_size_cap_prunes_the_oldest_traces_first(adapters: Adapters) -> None:
    t = adapters.traces
    empty = await t.size()  # SQLite counts its file's pages in use: an empty one has its tables
    payload = {"text": "x" * 20_000}
    for i in range(40):
        await t.append([TraceRecord(f"t{i:02d}", "trigger", "S", 1000.0 + i, {"entry": f"e{i}", **payload})])
    full = await t.size()
    assert full - empty > 40 * 20_000
    cap = empty + (full - empty) // 2
    # nothing is old, but the traces take more than the cap: the oldest go until they fit
    removed = await t.prune(older_than=0.0, max_bytes=cap)
    assert 0 < removed < 40
    assert await t.size() <= cap
    kept = {s.trace_id for s in await t.recent(100)}
    assert kept == {f"t{i:02d}" for i in range(40 - len(kept), 40)}  # the newest, all of them
    assert await t.prune(older_than=0.0, max_bytes=full) == 0  # under the cap: nothing goes
    assert await t.prune(older_than=0.0, max_bytes=None) == 0
