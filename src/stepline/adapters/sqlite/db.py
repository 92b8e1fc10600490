"""One SQLite file, one writer thread: every operation runs on that thread, and operations that arrive
together share one transaction (one commit, one fsync under synchronous=FULL).

Each operation runs inside its own SAVEPOINT, so one that fails rolls back alone and the others in
its batch still commit. Several processes may open the same file: WAL lets them read at once, and
`BEGIN IMMEDIATE` with a busy timeout takes turns at writing.

A damaged file (a bad header, truncated, overwritten in the middle) is refused when it is opened, with
a StoreCorruptError that names it and says what to do: `PRAGMA quick_check` reads every page of a file
up to CHECK_AT_OPEN_BYTES (128 MiB with its -wal: about 0.1 s with the file in the page cache, 1.5 s
from a cold one; the measurements are by the constant). Damage found later (in a larger file, or done
while running) fails the operations that meet it with the same error, and is reported once to `health`
under "database file", where it stays until the process restarts: a damaged file does not heal by itself.
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

from stepline._errors import StoreCorruptError, StoreError, StoreUnavailableError
from stepline._health import Health

T = TypeVar("T")
log = logging.getLogger("stepline.sqlite")

Synchronous = Literal["OFF", "NORMAL", "FULL"]
_BATCH = 512

# Files (with their -wal) up to this size are checked page by page when opened (PRAGMA quick_check),
# so that a damaged one is refused at start rather than found by the first operation that reads the
# damaged page. Measured here (ext4 on a virtual disk, SQLite 3.40): a 46 MB file takes 39 ms with the
# file in the page cache and 0.5 s from a cold cache, a 99 MB file 82 ms and 1.2 s. At 128 MiB the check
# costs at most about 0.1 s (warm) to 1.5 s (after a reboot) of start-up; larger files, whose check
# would take seconds, are opened unchecked and their damage is found while running.
CHECK_AT_OPEN_BYTES = 128 * 1024 * 1024
_CHECK_PROBLEMS = 10  # quick_check stops after this many problems: enough to tell, quick on a wrecked file
_DAMAGE = "database file"  # the health component under which damage found while running is reported

# Stream items, each group's sequence number, and its change log (the newest changes, for catching up).
_STREAM_TABLES = (
    """CREATE TABLE IF NOT EXISTS stream_items (
        stream TEXT NOT NULL, grp TEXT NOT NULL, id TEXT NOT NULL, value BLOB NOT NULL,
        PRIMARY KEY (stream, grp, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS stream_groups (
        stream TEXT NOT NULL, grp TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (stream, grp)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS stream_log (
        stream TEXT NOT NULL, grp TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, op TEXT NOT NULL,
        value BLOB, PRIMARY KEY (stream, grp, seq)
    ) WITHOUT ROWID""",
)
# Every process's stream changes and events in the order written, for the other processes to read (SQLite
# has no notifications): the newest STREAM_BUS rows, a row per change (seq set) or event (seq NULL).
_STREAM_BUS = """CREATE TABLE IF NOT EXISTS stream_bus (
    pos INTEGER PRIMARY KEY, origin TEXT NOT NULL, stream TEXT NOT NULL, grp TEXT NOT NULL, id TEXT,
    op TEXT NOT NULL, seq INTEGER, value BLOB
)"""

# The schema as of SCHEMA_VERSION (PRAGMA user_version), for a new file; an older file is brought up to it
# by MIGRATIONS, so each change of it is made twice: here, and in a migration step (a test compares the two).
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS deliveries (
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
        owner TEXT,
        lost INTEGER NOT NULL DEFAULT 0,
        resumed INTEGER NOT NULL DEFAULT 0,
        suspended INTEGER NOT NULL DEFAULT 0,
        woken INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS deliveries_visible ON deliveries (step, visible_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_group ON deliveries (step, message_group_id, seq)",
    "CREATE INDEX IF NOT EXISTS deliveries_owner ON deliveries (owner) WHERE leased = 1",
    """CREATE TABLE IF NOT EXISTS dead_letters (
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
    )""",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID",
    # Keys expire by this index, a bounded batch at a time: a scan of millions of keys held the write lock.
    "CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency_keys (expires_at)",
    """CREATE TABLE IF NOT EXISTS state (
        grp TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (grp, key)
    ) WITHOUT ROWID""",
    # Stepline's own records (stop marks, approvals, conversations), shaped as state but apart from it, so
    # that they neither show among the user's groups nor collide with them.
    """CREATE TABLE IF NOT EXISTS control (
        grp TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (grp, key)
    ) WITHOUT ROWID""",
    # One row per trace per write: the records of a trace that arrive together are stored together (a
    # JSON array) with their summary, so a request costs one row. A trace's summary is the sum of its
    # parts, computed when read: a summary row kept up to date cost a second write per request.
    """CREATE TABLE IF NOT EXISTS trace_parts (
        id INTEGER PRIMARY KEY,
        trace_id TEXT NOT NULL,
        entry TEXT NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        records INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS trace_parts_trace ON trace_parts (trace_id)",
    "CREATE TABLE IF NOT EXISTS cron_ticks (step TEXT PRIMARY KEY, tick REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS workers (owner TEXT PRIMARY KEY, pid INTEGER NOT NULL, heartbeat_at REAL NOT NULL)",
    *_STREAM_TABLES,
    _STREAM_BUS,
]
# Release 0.1's tables as it made them (version 0), for _to_v1 to find. Frozen: SCHEMA moves on, these do not.
_V0_TABLES = (
    """CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, step TEXT NOT NULL, event_id TEXT NOT NULL,
        topic TEXT NOT NULL, data BLOB NOT NULL, trace_id TEXT NOT NULL, emitted_by TEXT, created_at REAL NOT NULL,
        message_group_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, visible_at REAL NOT NULL,
        leased INTEGER NOT NULL DEFAULT 0, owner TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS deliveries_visible ON deliveries (step, visible_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_group ON deliveries (step, message_group_id, seq)",
    "CREATE INDEX IF NOT EXISTS deliveries_owner ON deliveries (owner) WHERE leased = 1",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id TEXT PRIMARY KEY, step TEXT NOT NULL, event_id TEXT NOT NULL, topic TEXT NOT NULL, data BLOB NOT NULL,
        trace_id TEXT NOT NULL, emitted_by TEXT, created_at REAL NOT NULL, message_group_id TEXT,
        attempts INTEGER NOT NULL, error TEXT NOT NULL, traceback TEXT, failed_at REAL NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS state (
        grp TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (grp, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS trace_parts (
        id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, entry TEXT NOT NULL, first_at REAL NOT NULL,
        last_at REAL NOT NULL, records INTEGER NOT NULL, errors INTEGER NOT NULL, data BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS trace_parts_trace ON trace_parts (trace_id)",
    "CREATE TABLE IF NOT EXISTS cron_ticks (step TEXT PRIMARY KEY, tick REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS workers (owner TEXT PRIMARY KEY, pid INTEGER NOT NULL, heartbeat_at REAL NOT NULL)",
)


def _to_v1(conn: sqlite3.Connection) -> None:
    """Release 0.1 (version 0) to 1: deliveries get `lost` (the attempt before never finished: a lost attempt
    counts), idempotency keys an index on their expiry (a scan of millions of keys held the write lock).

    Version 0 is any file without a user_version, so also one written before release 0.1, whose traces are
    in two tables (trace_chunks, traces) and which has no trace_parts: the tables of 0.1 are made where
    missing, and such traces move to trace_parts."""
    for statement in _V0_TABLES:
        conn.execute(statement)
    conn.execute("ALTER TABLE deliveries ADD COLUMN lost INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency_keys (expires_at)")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'trace_chunks'").fetchone():
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


# The rows of Stepline's own in a version-1 state table: its stop marks and conversations by their group,
# its approvals by their shape too (an object with "status" and "topic"), since a user's group may be called
# "approvals" as well. CASE keeps json_type from a value that is not JSON; values are read as text (JSONB).
_OWN_ROWS = (
    "grp IN ('stepline.stopped', 'llm.conversations') OR (grp = 'approvals' AND "
    "CASE WHEN json_valid(CAST(value AS TEXT)) THEN json_type(CAST(value AS TEXT), '$.status') IS NOT NULL "
    "AND json_type(CAST(value AS TEXT), '$.topic') IS NOT NULL ELSE 0 END)"
)


def _to_v2(conn: sqlite3.Connection) -> None:
    """1 to 2: Stepline's own records move out of the user's state into a table of their own (control). Kept
    in state under reserved groups, they showed among the user's groups and could collide with them. Their
    groups lose the prefix that kept them apart there: stepline.stopped is stopped, llm.conversations is
    conversations, approvals stays approvals."""
    conn.execute(
        "CREATE TABLE control (grp TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (grp, key)) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO control (grp, key, value) SELECT CASE grp WHEN 'stepline.stopped' THEN 'stopped' "
        f"WHEN 'llm.conversations' THEN 'conversations' ELSE grp END, key, value FROM state WHERE {_OWN_ROWS}"
    )
    conn.execute(f"DELETE FROM state WHERE {_OWN_ROWS}")


def _to_v3(conn: sqlite3.Connection) -> None:
    """2 to 3: durable handlers. A delivery says whether its run was suspended or given back before (`resumed`:
    it may have a journal to read), whether it is suspended now (not counted in its step's backlog), and
    whether it was woken while it still ran (`woken`: its next suspend hands it out again at once)."""
    for column in ("resumed", "suspended", "woken"):
        conn.execute(f"ALTER TABLE deliveries ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")


def _to_v4(conn: sqlite3.Connection) -> None:
    """3 to 4: streams. Stream items, a sequence number per group, and a change log per group."""
    for statement in _STREAM_TABLES:
        conn.execute(statement)


def _to_v5(conn: sqlite3.Connection) -> None:
    """4 to 5: the stream bus, for changes and events to reach every process."""
    conn.execute(_STREAM_BUS)


# MIGRATIONS[n] takes a file from version n to n + 1; each step is one function, run in the transaction
# that opens the file. Append only: a released step never changes, since files out there went through it.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_to_v1, _to_v2, _to_v3, _to_v4, _to_v5)
SCHEMA_VERSION = len(MIGRATIONS)


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
    name: str
    due: float = field(default=0.0)


class Database:
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 30.0,
        health: Health | None = None,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.health = health or Health()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._periodic: list[_Periodic] = []
        self._users = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._damage_reported = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot create the folder of the database {self.path}: {exc.strerror}",
                fix="give the store a path Stepline may write to (--store sqlite:///path)",
            ) from None
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

    def every(self, seconds: float, fn: Callable[[sqlite3.Connection], Any], name: str = "store heartbeat") -> None:
        """Run `fn` on the writer thread, in a transaction of its own, about every `seconds`.

        A failure is reported to `health` under `name` (and logged once), and tried again next time."""
        self._periodic.append(_Periodic(seconds, fn, name))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, True)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, False)

    async def _submit(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        if not self._thread.is_alive():
            raise StoreUnavailableError(f"the database {self.path} is closed", fix="the app is shutting down")
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
        # Several processes opening a new file at once race for the lock that turning on WAL takes, and
        # SQLite answers that one with SQLITE_BUSY at once instead of waiting: take turns until the busy
        # timeout, as every other statement does.
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA cache_size=-16000")  # 16 MB
                self._check(conn)
                self._prepare(conn)
                return conn
            except sqlite3.OperationalError as exc:
                if conn is not None:
                    conn.close()
                if _busy(exc) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.1)
                    continue
                raise store_error(exc, self.path, self.busy_timeout) from None
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                raise store_error(exc, self.path, self.busy_timeout) from None
            except BaseException:
                if conn is not None:
                    conn.close()
                raise

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuse a damaged file: read every page of it (PRAGMA quick_check), if it is small enough that
        this is cheap (CHECK_AT_OPEN_BYTES). A new, empty file has nothing to check."""
        size = sum(p.stat().st_size for p in (self.path, _wal(self.path)) if p.exists())
        if size == 0 or size > CHECK_AT_OPEN_BYTES:
            return
        problems = [
            line
            for (text,) in conn.execute(f"PRAGMA quick_check({_CHECK_PROBLEMS})")
            for line in str(text).splitlines()
            if line and not line.startswith("*** in database")
        ]
        if problems != ["ok"]:
            more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
            raise damaged(self.path, f"PRAGMA quick_check: {problems[0]}{more}")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the tables, or bring an older file up to SCHEMA_VERSION, in one transaction: a step that
        fails leaves the file as it was. A file that is current takes no write lock to open."""
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")  # several workers may open the file at once: one of them migrates
        try:
            # Read again under the lock: another process may have migrated the file meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailableError(
                    f"the database {self.path} was written by a newer Stepline (schema {version}; this one "
                    f"knows {SCHEMA_VERSION})",
                    fix="upgrade Stepline, or point the store at another file (--store sqlite:///path)",
                )
            if version == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                for statement in SCHEMA:  # a new file: the schema as it is now, no steps to walk
                    conn.execute(statement)
            else:
                for migrate in MIGRATIONS[version:]:
                    migrate(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

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
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        """Jobs that arrived after close would wait for ever: answer them."""
        closed = StoreUnavailableError(f"the database {self.path} is closed", fix="the app is shutting down")
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_resolve, job.future, False, closed)

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
                except Exception as exc:
                    _rollback(conn)
                    if not final:
                        error = store_error(exc, self.path, self.busy_timeout) if _is_sqlite(exc) else exc
                        self._found_damage(error)
                        self.health.failed(periodic.name, error, "see the error; it is tried again every second")
                else:
                    self.health.recovered(periodic.name)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.debug("WAL checkpoint skipped", exc_info=True)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results, committed, failed = self._transaction(conn, batch)
        if not failed:  # the usual case, looked at no further
            for job, result in zip(batch, results, strict=True):
                with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                    job.loop.call_soon_threadsafe(_resolve, job.future, True, result[1])
            return
        damaged_at = next((i for i, (ok, value) in enumerate(results) if not ok and _met_damage(value)), None)
        if damaged_at is not None and len(batch) > 1:
            # The operation that met a damaged page poisons the rest of its transaction (what follows it
            # fails as damaged too, and the COMMIT may fail, writing nothing): every other operation that
            # did not commit runs again, each in a transaction of its own, and fails only if it meets damage.
            for i, job in enumerate(batch):
                ok, value = results[i]
                if i != damaged_at and (not committed or (i > damaged_at and not ok and _met_damage(value))):
                    results[i] = self._transaction(conn, [job])[0][0]
        for job, (ok, value) in zip(batch, results, strict=True):
            if not ok and _is_sqlite(value):
                # Driver errors do not cross the seam: the caller gets a StoreError that says what to do.
                value = store_error(value, self.path, self.busy_timeout)
                self._found_damage(value)
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                job.loop.call_soon_threadsafe(_resolve, job.future, ok, value)

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Job]) -> tuple[list[tuple[bool, Any]], bool, bool]:
        """Each job in a savepoint of one transaction: (ok, result or exception) per job, whether the
        transaction committed, and whether any job failed."""
        results: list[tuple[bool, Any]] = []
        failed = False
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
                    failed = True
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction itself failed: nothing in the batch happened
            _rollback(conn)
            # A job's own error says more than the COMMIT's; the jobs that had succeeded get the COMMIT's.
            lost = (False, exc)
            return [r if not r[0] else lost for r in results] + [lost] * (len(batch) - len(results)), False, True
        return results, True, failed

    def _found_damage(self, error: BaseException) -> None:
        """Damage met while running: reported to health (which logs it) once, and left there, since the
        file will not heal by itself; each operation that meets it fails with the same error."""
        if isinstance(error, StoreCorruptError) and not self._damage_reported:
            self._damage_reported = True
            self.health.failed(_DAMAGE, error)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _is_sqlite(exc: object) -> bool:
    return isinstance(exc, sqlite3.Error)


def _is_corrupt(exc: BaseException) -> bool:
    """SQLite's words for a damaged file: SQLITE_CORRUPT "database disk image is malformed", SQLITE_NOTADB
    "file is not a database" (before 3.7.x "file is encrypted or is not a database"), and their codes."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    name = getattr(exc, "sqlite_errorname", "")
    return (
        code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
        or name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in text
        or "not a database" in text
    )


def _met_damage(exc: object) -> bool:
    return isinstance(exc, sqlite3.Error) and _is_corrupt(exc)


def _busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def _rollback(conn: sqlite3.Connection) -> None:
    # A failed ROLLBACK (the disk vanished) must not take the writer thread down with it.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def store_error(exc: BaseException, path: Path, busy_timeout: float = 30.0) -> StoreError:
    """A driver error as the StoreError a person can act on: what happened to which file, and the fix."""
    text = str(exc)
    name = getattr(exc, "sqlite_errorname", "")
    if _is_corrupt(exc):
        return damaged(path, text)
    if name.startswith("SQLITE_FULL") or "is full" in text:
        return StoreUnavailableError(
            f"the disk holding {path} is full ({text})",
            reason=text,
            fix="free some space on that disk; Stepline retries by itself and resumes once writes succeed",
        )
    if isinstance(exc, sqlite3.Error) and _busy(exc):
        return StoreUnavailableError(
            f"another process held the write lock of {path} for more than {busy_timeout:g} s ({text})",
            reason=text,
            fix="end the other process's open transaction (a `sqlite3` shell, a backup or admin tool); "
            "Stepline retries by itself",
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreUnavailableError(
            f"the database {path} is read-only ({text})",
            reason=text,
            fix="let the user Stepline runs as write the file, its -wal and -shm files and their folder",
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return StoreUnavailableError(
            f"cannot open the database {path} ({text})",
            reason=text,
            fix="check that its folder exists and may be written (or give the store another path)",
        )
    if name.startswith("SQLITE_IOERR") or "I/O error" in text:
        return StoreUnavailableError(
            f"an I/O error on the database {path} ({text})",
            reason=text,
            fix="check the disk and the kernel log (dmesg); Stepline retries by itself",
        )
    return StoreUnavailableError(f"the database {path} failed: {text}", reason=text)


_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def damaged(path: Path, detail: str) -> StoreCorruptError:
    """The error for a damaged file: which one, what SQLite found, and how to start again."""
    name = path.name
    return StoreCorruptError(
        f"the database {path} is damaged ({detail})",
        reason=detail,
        fix=f"stop Stepline and, in {path.parent}, move it aside with its -wal if there is one (mv {name} "
        f"{name}.damaged; mv {name}-wal {name}.damaged-wal; rm -f {name}-shm), then start again with a new file "
        f"or a backup; `sqlite3 {name}.damaged .recover | sqlite3 {name}` may save most of what it held",
    )


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
