"""Idempotency keys expire by an index, a bounded batch per heartbeat, and never before their window ends.

Every second the heartbeat expired keys with `DELETE ... WHERE expires_at < ?` over a table without an
index on expires_at: a scan of every key, holding the write lock (90 ms at 3 million keys) while every
other write waited. It now deletes at most `_EXPIRE_KEYS` of the oldest expired keys, found by the index
idempotency_expiry, which an old database (schema version 0) gets when it is opened.

The heartbeat here is the queue's own, run as its writer thread runs it (one write transaction), on a
connection of the test's, so that each run can be counted; the queue's writer thread is closed by then.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepline.adapters import sqlite as sqlite_adapter
from stepline.adapters.base import Event
from stepline.adapters.sqlite import SqliteEventQueue, open_sqlite

NOW = 1_000_000.0
WINDOW = 86400.0
# Keys expired per heartbeat, at most (before the bound there was none: every expired key went at once).
BATCH: int = getattr(sqlite_adapter, "_EXPIRE_KEYS", 2000)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "stepline.db"


async def _closed_queue(db: Path, clock: Clock) -> SqliteEventQueue:
    """The file's schema made by the adapters, and their queue, whose writer thread is then closed."""
    adapters = open_sqlite(db, clock=clock)
    await adapters.close()
    assert isinstance(adapters.queue, SqliteEventQueue)
    return adapters.queue


@pytest.fixture
def connection(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db, isolation_level=None)
    yield conn
    conn.close()


def _add_keys(conn: sqlite3.Connection, prefix: str, expiries: list[float]) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO idempotency_keys (key, expires_at) VALUES (?, ?)",
        [(f"{prefix}-{i:07d}", at) for i, at in enumerate(expiries)],
    )
    conn.execute("COMMIT")


def _heartbeat(queue: SqliteEventQueue, conn: sqlite3.Connection) -> None:
    """One run of the queue's heartbeat, in a write transaction of its own, as its writer thread runs it."""
    conn.execute("BEGIN IMMEDIATE")
    queue._heartbeat(conn)
    conn.execute("COMMIT")


def _keys(conn: sqlite3.Connection, prefix: str) -> set[str]:
    return {k for (k,) in conn.execute("SELECT key FROM idempotency_keys WHERE key LIKE ?", (f"{prefix}-%",))}


def _plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


async def test_the_heartbeat_finds_expired_keys_by_the_expiry_index_without_scanning_the_table(
    db: Path, connection: sqlite3.Connection
) -> None:
    queue = await _closed_queue(db, Clock(NOW))
    _add_keys(connection, "old", [NOW - 10 - i for i in range(2000)])
    _add_keys(connection, "live", [NOW + 10 + i for i in range(2000)])
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    _heartbeat(queue, connection)
    connection.set_trace_callback(None)
    expiry = [s for s in statements if "idempotency_keys" in s]
    assert expiry, statements  # the heartbeat expires keys
    # As Stepline leaves the file (no statistics), and with statistics, as `sqlite3 file ANALYZE` leaves it.
    for analyzed in (False, True):
        if analyzed:
            connection.execute("ANALYZE")
        for statement in expiry:
            plan = _plan(connection, statement)
            on_keys = [step for step in plan if "idempotency_keys" in step]
            assert any("idempotency_expiry" in step for step in on_keys), (analyzed, statement, plan)
            assert not any(step.startswith("SCAN") for step in on_keys), (analyzed, statement, plan)  # searches


async def test_one_heartbeat_expires_at_most_one_batch_of_keys_the_oldest_first(
    db: Path, connection: sqlite3.Connection
) -> None:
    batch = BATCH
    queue = await _closed_queue(db, Clock(NOW))
    # Five batches' worth expired, in no particular order of insertion; the oldest are the "old-" keys
    # whose expiry is furthest back.
    expired = [NOW - 1 - ((i * 7919) % (5 * batch)) for i in range(5 * batch)]
    _add_keys(connection, "old", expired)
    _add_keys(connection, "live", [NOW + 1 + i for i in range(500)])
    _heartbeat(queue, connection)
    left = _keys(connection, "old")
    assert len(expired) - len(left) == batch
    oldest = sorted(range(len(expired)), key=lambda i: expired[i])[:batch]
    assert left == {f"old-{i:07d}" for i in range(len(expired))} - {f"old-{i:07d}" for i in oldest}
    assert len(_keys(connection, "live")) == 500


async def test_keys_within_their_window_survive_every_heartbeat_while_the_expired_drain(
    db: Path, connection: sqlite3.Connection
) -> None:
    batch = BATCH
    clock = Clock(NOW)
    queue = await _closed_queue(db, clock)
    # Expired and live keys interleaved in expiry, some live by a millisecond, some by a whole window.
    _add_keys(connection, "old", [NOW - 0.001 - i * 3.0 for i in range(3 * batch + 17)])
    live = [NOW + 0.001 + i * (WINDOW / 1000) for i in range(1000)]
    _add_keys(connection, "live", live)
    runs = 0
    while _keys(connection, "old"):
        before = len(_keys(connection, "old"))
        _heartbeat(queue, connection)
        runs += 1
        assert before - len(_keys(connection, "old")) <= batch  # bounded, on every run
        assert len(_keys(connection, "live")) == len(live)  # never a key still within its window
        assert runs <= 4, "the expired keys did not drain"
    assert runs == 4  # 3 batches and 17 keys: four runs
    # The window of a live key ends: the next heartbeat takes it, and only it.
    clock.now = live[0] + 0.001
    _heartbeat(queue, connection)
    assert _keys(connection, "live") == {f"live-{i:07d}" for i in range(1, len(live))}

    # Through the adapters themselves: a key within its window still makes a repeat emit a duplicate.
    adapters = open_sqlite(db, clock=clock)
    try:
        event = Event("e1", "t", {}, "trace", None, time.time())
        assert not await adapters.queue.publish(event, {"a": 0.0}, idempotency_key="live-0000999")
    finally:
        await adapters.close()


# The schema of release 0.1 (schema version 0), as the base commit made it: idempotency_keys has no index
# on expires_at, deliveries no `lost`, trace_parts no `size`.
V0_SCHEMA = """
CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, step TEXT NOT NULL, event_id TEXT NOT NULL,
    topic TEXT NOT NULL, data BLOB NOT NULL, trace_id TEXT NOT NULL, emitted_by TEXT, created_at REAL NOT NULL,
    message_group_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, visible_at REAL NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0, owner TEXT
);
CREATE INDEX deliveries_visible ON deliveries (step, visible_at);
CREATE INDEX deliveries_group ON deliveries (step, message_group_id, seq);
CREATE INDEX deliveries_owner ON deliveries (owner) WHERE leased = 1;
CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY, step TEXT NOT NULL, event_id TEXT NOT NULL, topic TEXT NOT NULL, data BLOB NOT NULL,
    trace_id TEXT NOT NULL, emitted_by TEXT, created_at REAL NOT NULL, message_group_id TEXT,
    attempts INTEGER NOT NULL, error TEXT NOT NULL, traceback TEXT, failed_at REAL NOT NULL
);
CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE state (grp TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (grp, key)) WITHOUT ROWID;
CREATE TABLE trace_parts (
    id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, entry TEXT NOT NULL, first_at REAL NOT NULL,
    last_at REAL NOT NULL, records INTEGER NOT NULL, errors INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX trace_parts_trace ON trace_parts (trace_id);
CREATE TABLE cron_ticks (step TEXT PRIMARY KEY, tick REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE workers (owner TEXT PRIMARY KEY, pid INTEGER NOT NULL, heartbeat_at REAL NOT NULL);
"""


async def test_a_version_0_database_is_migrated_and_its_keys_expire_by_the_new_index(
    db: Path, connection: sqlite3.Connection
) -> None:
    connection.executescript(V0_SCHEMA)
    assert connection.execute("PRAGMA user_version").fetchone() == (0,)
    _add_keys(connection, "old", [NOW - 1 - i for i in range(3000)])
    _add_keys(connection, "live", [NOW + 1 + i for i in range(3000)])
    connection.execute(
        "INSERT INTO trace_parts (trace_id, entry, first_at, last_at, records, errors, data) "
        "VALUES ('t1', 'GET /a', 1, 2, 1, 0, '[[\"trigger\", \"Api\", 1.0, {}]]')"
    )

    clock = Clock(NOW - WINDOW)  # the heartbeats of the opening find nothing expired yet
    queue = await _closed_queue(db, clock)

    indexes = {n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'idempotency_keys'")}
    assert "idempotency_expiry" in indexes
    assert connection.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert len(_keys(connection, "old")) == 3000 and len(_keys(connection, "live")) == 3000  # nothing lost
    clock.now = NOW
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    _heartbeat(queue, connection)
    connection.set_trace_callback(None)
    for statement in (s for s in statements if "idempotency_keys" in s):
        assert any("idempotency_expiry" in step for step in _plan(connection, statement)), statement
    assert len(_keys(connection, "old")) == 3000 - min(3000, BATCH)
    assert len(_keys(connection, "live")) == 3000
