"""One SQLite file, one writer thread: every operation runs on that thread, and operations that arrive
together share one transaction (one commit, one fsync under synchronous=FULL).

Each operation runs inside its own SAVEPOINT, so one that fails rolls back alone and the others in
its batch still commit. Several processes may open the same file: WAL lets them read at once, and
`BEGIN IMMEDIATE` with a busy timeout takes turns at writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")
log = logging.getLogger("stepline.sqlite")

Synchronous = Literal["OFF", "NORMAL", "FULL"]
_BATCH = 512

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    step TEXT NOT NULL,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    trace_id TEXT NOT NULL,
    emitted_by TEXT,
    created_at REAL NOT NULL,
    message_group_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_visible ON deliveries (step, visible_at);
CREATE INDEX IF NOT EXISTS deliveries_group ON deliveries (step, message_group_id, seq);
CREATE INDEX IF NOT EXISTS deliveries_owner ON deliveries (owner) WHERE leased = 1;
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    step TEXT NOT NULL,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    trace_id TEXT NOT NULL,
    emitted_by TEXT,
    created_at REAL NOT NULL,
    message_group_id TEXT,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    traceback TEXT,
    failed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    grp TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (grp, key)
) WITHOUT ROWID;
-- One row per trace per write: the records of a trace that arrive together are stored together (a
-- JSON array) with their summary, so a request costs one row. A trace's summary is the sum of its
-- parts, computed when read: a summary row kept up to date cost a second write per request.
CREATE TABLE IF NOT EXISTS trace_parts (
    id INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    records INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS trace_parts_trace ON trace_parts (trace_id);
CREATE TABLE IF NOT EXISTS cron_ticks (step TEXT PRIMARY KEY, tick REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (owner TEXT PRIMARY KEY, pid INTEGER NOT NULL, heartbeat_at REAL NOT NULL);
"""


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


@dataclass
class _Periodic:
    every: float
    fn: Callable[[sqlite3.Connection], Any]
    due: float = field(default=0.0)


class Database:
    def __init__(self, path: str | Path, *, synchronous: Synchronous = "NORMAL", busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._periodic: list[_Periodic] = []
        self._users = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"stepline-sqlite:{self.path.name}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def acquire(self) -> Database:
        self._users += 1
        return self

    async def release(self) -> None:
        """Closed when the last adapter sharing this database lets go."""
        self._users -= 1
        if self._users <= 0:
            await self.close()

    def every(self, seconds: float, fn: Callable[[sqlite3.Connection], Any]) -> None:
        """Run `fn` on the writer thread, in a transaction of its own, about every `seconds`."""
        self._periodic.append(_Periodic(seconds, fn))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, True)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, False)

    async def _submit(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        if not self._thread.is_alive():
            raise RuntimeError(f"the database {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, write, loop, future))
        return await future

    async def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)

    # -- the writer thread -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-16000")  # 16 MB
        conn.executescript(SCHEMA)
        _migrate_traces(conn)
        return conn

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        wrote_since_checkpoint = False
        try:
            while True:
                try:
                    first = self._jobs.get(timeout=self._next_periodic())
                except queue.Empty:
                    if wrote_since_checkpoint:
                        self._checkpoint(conn)  # idle: keep the WAL short while nobody waits
                        wrote_since_checkpoint = False
                    self._run_periodic(conn)
                    continue
                if first is None:
                    break
                batch = [first]
                stop = False
                while len(batch) < _BATCH:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, batch)
                wrote_since_checkpoint = wrote_since_checkpoint or any(j.write for j in batch)
                self._run_periodic(conn)
                if stop:
                    break
        finally:
            for periodic in self._periodic:
                periodic.due = 0.0
            self._run_periodic(conn, final=True)
            conn.close()

    def _next_periodic(self) -> float:
        if not self._periodic:
            return 1.0
        return max(0.0, min(p.due for p in self._periodic) - time.monotonic())

    def _run_periodic(self, conn: sqlite3.Connection, final: bool = False) -> None:
        now = time.monotonic()
        for periodic in self._periodic:
            if periodic.due <= now:
                periodic.due = now + periodic.every
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    periodic.fn(conn)
                    conn.execute("COMMIT")
                except Exception:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if not final:
                        log.exception("periodic database task failed")

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.debug("WAL checkpoint skipped", exc_info=True)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE" if any(j.write for j in batch) else "BEGIN")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    results.append((True, job.fn(conn)))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction itself failed: nothing in the batch happened
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(False, exc)] * len(batch)
        for job, (ok, value) in zip(batch, results, strict=True):
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                job.loop.call_soon_threadsafe(_resolve, job.future, ok, value)


def _migrate_traces(conn: sqlite3.Connection) -> None:
    """Databases written before trace_parts keep traces in two tables (trace_chunks, traces): move them over."""
    old = "SELECT 1 FROM sqlite_master WHERE name = 'trace_chunks'"
    if not conn.execute(old).fetchone():
        return  # the usual case: no write lock taken just to open the file
    conn.execute("BEGIN IMMEDIATE")  # several workers may open an old file at once: one migrates
    try:
        if conn.execute(old).fetchone():
            # Old chunks are BLOBs: read as text, since SQLite 3.45 and later take a BLOB for JSONB.
            conn.execute(
                "INSERT INTO trace_parts (trace_id, entry, first_at, last_at, records, errors, data) "
                "SELECT trace_id, COALESCE(r->'$[0][3]'->>'entry', r->>'$[0][1]', '?'), r->>'$[0][2]', "
                "(SELECT MAX(value->>2) FROM json_each(r)), json_array_length(r), (SELECT COUNT(*) "
                "FROM json_each(r) WHERE value->>0 = 'end' AND value->'$[3]'->>'status' = 'error'), r "
                "FROM (SELECT id, trace_id, CAST(records AS TEXT) AS r FROM trace_chunks) ORDER BY id"
            )
            conn.execute("DROP TABLE trace_chunks")
            conn.execute("DROP TABLE IF EXISTS traces")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
