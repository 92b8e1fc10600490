"""A database written before traces moved to trace_parts opens with its traces intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from stepline.adapters.sqlite import open_sqlite

OLD_TRACES = """
CREATE TABLE trace_chunks (id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, records BLOB NOT NULL);
CREATE INDEX trace_chunks_trace ON trace_chunks (trace_id);
CREATE TABLE traces (
    trace_id TEXT PRIMARY KEY, entry TEXT NOT NULL, started_at REAL NOT NULL, last_at REAL NOT NULL,
    records INTEGER NOT NULL, errors INTEGER NOT NULL
) WITHOUT ROWID;
"""


async def test_old_trace_tables_are_moved_over(tmp_path: Path) -> None:
    path = tmp_path / "stepline.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_TRACES)
    chunks = [
        ("t1", [["trigger", "Api", 1.0, {"entry": "GET /a", "type": "api"}], ["start", "Api", 1.5, {}]]),
        ("t2", [["trigger", "Tick", 2.0, {"entry": "cron Tick"}]]),
        ("t1", [["end", "Api", 3.0, {"status": "error", "error": "boom"}]]),
    ]
    conn.executemany(
        "INSERT INTO trace_chunks (trace_id, records) VALUES (?, ?)", [(t, orjson.dumps(r)) for t, r in chunks]
    )
    conn.commit()
    conn.close()

    adapters = open_sqlite(path)
    try:
        records = await adapters.traces.trace("t1")
        assert [(r.kind, r.ts) for r in records] == [("trigger", 1.0), ("start", 1.5), ("end", 3.0)]
        assert records[2].data == {"status": "error", "error": "boom"}
        summaries = {s.trace_id: s for s in await adapters.traces.recent()}
        assert (summaries["t1"].entry, summaries["t1"].last_at, summaries["t1"].records) == ("GET /a", 3.0, 3)
        assert (summaries["t1"].errors, summaries["t2"].errors, summaries["t2"].entry) == (1, 0, "cron Tick")
    finally:
        for part in (adapters.queue, adapters.state, adapters.traces, adapters.cron):
            await part.close()
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "trace_chunks" not in tables and "traces" not in tables
