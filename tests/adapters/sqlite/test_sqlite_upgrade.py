"""Older database files open upgraded, with what they held: a pre-release one's traces move to trace_parts,
a version-1 one's Stepline records move out of the user's state into control; and the steps that do it."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from stepline._errors import StoreUnavailableError
from stepline.adapters.sqlite import open_sqlite
from stepline.adapters.sqlite.db import MIGRATIONS, SCHEMA_VERSION, Database
from tests.adapters.sqlite.test_idempotency_expiry import V0_SCHEMA

OLD_TRACES = """
CREATE TABLE trace_chunks (id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, records BLOB NOT NULL);
CREATE INDEX trace_chunks_trace ON trace_chunks (trace_id);
CREATE TABLE traces (
    trace_id TEXT PRIMARY KEY, entry TEXT NOT NULL, started_at REAL NOT NULL, last_at REAL NOT NULL,
    records INTEGER NOT NULL, errors INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Version 1, as its migration from release 0.1 left it: deliveries have `lost`, idempotency keys an expiry index.
V1_SCHEMA = (
    V0_SCHEMA
    + """
ALTER TABLE deliveries ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);
PRAGMA user_version = 1;
"""
)

APPROVAL = {
    "name": "report",
    "key": "r1",
    "topic": "report.decided",
    "status": "pending",
    "trace_id": "t1",
    "step": "Draft",
    "requested_at": 1.0,
    "data": {"draft": "..."},
    "message": None,
    "expires_at": None,
    "decided_at": None,
    "by": None,
    "comment": None,
    "extra": {},
}


def _file(path: Path, script: str, state: Sequence[tuple[str, str, Any]] = ()) -> None:
    """A database file as an older Stepline left it: its tables, and state rows (values as JSON BLOBs)."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(script)
        if state:
            conn.executemany(
                "INSERT INTO state (grp, key, value) VALUES (?, ?, ?)", [(g, k, orjson.dumps(v)) for g, k, v in state]
            )
        conn.commit()
    finally:
        conn.close()


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


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
        await adapters.close()
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "trace_chunks" not in tables and "traces" not in tables


async def test_a_version_1_file_has_steplines_records_moved_from_state_to_control(tmp_path: Path) -> None:
    path = tmp_path / "stepline.db"
    user_approvals = {"note": "just a string", "mine": {"status": "open"}, "list": ["status", "topic"]}
    _file(
        path,
        V1_SCHEMA,
        [
            ("stepline.stopped", "t1", {"at": 1.0, "reason": "by hand"}),
            ("llm.conversations", "t1", [{"role": "user", "content": "hi"}]),
            ("approvals", "report/r1", APPROVAL),
            *(("approvals", k, v) for k, v in user_approvals.items()),
            ("orders", "o1", {"status": "paid", "topic": "orders.paid"}),  # approval-shaped, but a user group
        ],
    )

    adapters = open_sqlite(path)
    try:
        assert await adapters.control.groups() == ["approvals", "conversations", "stopped"]
        assert await adapters.control.get("stopped", "t1") == {"at": 1.0, "reason": "by hand"}
        assert await adapters.control.get("conversations", "t1") == [{"role": "user", "content": "hi"}]
        assert await adapters.control.get_group("approvals") == {"report/r1": APPROVAL}
        assert await adapters.state.groups() == ["approvals", "orders"]
        assert await adapters.state.get_group("approvals") == user_approvals
        assert await adapters.state.get("orders", "o1") == {"status": "paid", "topic": "orders.paid"}
    finally:
        await adapters.close()
    assert _rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_each_migration_is_one_function_and_the_version_counts_them() -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) == 5
    for n, migrate in enumerate(MIGRATIONS):
        assert inspect.isfunction(migrate) and migrate.__name__ == f"_to_v{n + 1}", migrate
        assert migrate.__doc__, f"{migrate.__name__} says what it changes and why"


def _layout(path: Path) -> dict[tuple[str, str], Any]:
    """What a file's schema is, whatever the text that made it: each table's columns, indexes and rowid, each
    index's columns and condition."""
    conn = sqlite3.connect(path)
    try:
        layout: dict[tuple[str, str], Any] = {}
        for kind, name, table, sql in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"):
            if kind == "table":
                layout[kind, name] = (
                    conn.execute(f"PRAGMA table_xinfo({name})").fetchall(),
                    sorted(conn.execute(f"PRAGMA index_list({name})").fetchall(), key=lambda r: r[1]),
                    "WITHOUT ROWID" in (sql or "").upper(),
                )
            else:
                text = " ".join((sql or "").split())
                layout[kind, name] = (table, conn.execute(f"PRAGMA index_xinfo({name})").fetchall(), text)
        layout["user_version", ""] = conn.execute("PRAGMA user_version").fetchone()[0]
        return layout
    finally:
        conn.close()


@pytest.mark.parametrize("old", [V0_SCHEMA, V1_SCHEMA, OLD_TRACES], ids=["release-0.1", "version-1", "pre-release"])
async def test_a_migrated_file_has_the_layout_of_a_new_one(tmp_path: Path, old: str) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    _file(tmp_path / "old" / "stepline.db", old)
    for path in (tmp_path / "new" / "stepline.db", tmp_path / "old" / "stepline.db"):
        await open_sqlite(path).close()
    new, migrated = _layout(tmp_path / "new" / "stepline.db"), _layout(tmp_path / "old" / "stepline.db")
    assert new["user_version", ""] == SCHEMA_VERSION
    assert sorted(migrated) == sorted(new)
    assert migrated == new


def test_a_file_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stepline.db"
    _file(path, V1_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION + 1};")
    with pytest.raises(StoreUnavailableError, match=rf"written by a newer Stepline \(schema {SCHEMA_VERSION + 1}"):
        open_sqlite(path)


async def test_a_current_file_opens_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "stepline.db"
    await open_sqlite(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        db = Database(path, busy_timeout=5)
        assert time.monotonic() - started < 2
        await db.close()
        _file(tmp_path / "old.db", V1_SCHEMA)
        old = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
        old.execute("BEGIN IMMEDIATE")
        try:  # an old one must take the lock to migrate: it waits its busy timeout, then says so
            with pytest.raises(StoreUnavailableError, match="held the write lock"):
                Database(tmp_path / "old.db", busy_timeout=0.2)
        finally:
            old.execute("ROLLBACK")
            old.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


OPENERS = 4
CHUNKS = 2000


def _open_at_once(path: str, barrier: Any, outcomes: Any) -> None:
    """In a child process: open the file together with the others, and say how it went."""
    barrier.wait(60)
    try:
        asyncio.run(open_sqlite(path).close())
        outcomes.put("ok")
    except BaseException as exc:
        outcomes.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_one_old_file_at_once_all_succeed_and_it_is_migrated_once(tmp_path: Path) -> None:
    # Each step would fail the second time (a column or table already there), so a step run twice would
    # fail an open; and the rows moved would be there twice.
    path = tmp_path / "stepline.db"
    _file(path, V0_SCHEMA + OLD_TRACES, [("stepline.stopped", f"t{n}", {"at": n}) for n in range(100)])
    conn = sqlite3.connect(path)
    records = orjson.dumps([["trigger", "Api", 1.0, {"entry": "GET /a"}]])
    conn.executemany(
        "INSERT INTO trace_chunks (trace_id, records) VALUES (?, ?)", [(f"t{n}", records) for n in range(CHUNKS)]
    )
    conn.commit()
    conn.close()

    context = multiprocessing.get_context("spawn")  # not fork: this process has threads
    barrier = context.Barrier(OPENERS)
    outcomes = context.Queue()
    children = [context.Process(target=_open_at_once, args=(str(path), barrier, outcomes)) for _ in range(OPENERS)]
    for child in children:
        child.start()
    try:
        reports = [outcomes.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(30)
    assert reports == ["ok"] * OPENERS
    assert [child.exitcode for child in children] == [0] * OPENERS
    assert _rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _rows(path, "SELECT COUNT(*) FROM trace_parts") == [(CHUNKS,)]
    assert _rows(path, "SELECT grp, COUNT(*) FROM control GROUP BY grp") == [("stopped", 100)]
    assert _rows(path, "SELECT COUNT(*) FROM state") == [(0,)]
