"""SQLite adapters: the embedded, durable default. One file (`.stepline/stepline.db`), WAL.

    sqlite:///.stepline/stepline.db     three slashes: a path relative to the project root
    sqlite:////var/lib/app/app.db       four: an absolute path
    ?sync=full                          fsync every commit (default normal)
    ?busy_timeout=30                    seconds to wait for a write lock another process holds

What a crash can lose (see docs/durability.md): with synchronous=NORMAL (the default) a power cut or
OS crash may lose the last transactions committed before it (an application crash, even `kill -9`,
loses nothing: the WAL is in the OS page cache). With synchronous=FULL every commit is fsynced
before `emit` returns, so nothing accepted is lost even to a power cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from stepline import _json
from stepline._errors import StoreError
from stepline._health import Health
from stepline._ids import new_id
from stepline.adapters import updates as _updates
from stepline.adapters.base import (
    FOREVER,
    STREAM_LOG,
    Adapters,
    ClaimSpec,
    DeadLetter,
    Delivery,
    Event,
    QueueStats,
    StateUpdate,
    StoreOptions,
    StoreURL,
    StreamChange,
    StreamEvent,
    TraceRecord,
    TraceSummary,
    UpdateResult,
    summarize,
)
from stepline.adapters.sqlite.db import Database, Synchronous

log = logging.getLogger("stepline.sqlite")

HEARTBEAT = 1.0
# A worker silent this long is taken for dead, and its leases are handed out again.
STALE_AFTER = 5.0
_POLL = 0.05
_PRUNE_ROWS = 5000  # trace parts looked at per pruning transaction
_CAP_ROWS = 100  # trace parts whose traces go per transaction when the size cap prunes (then it measures again)
# Idempotency keys expired per heartbeat, at most: the heartbeat holds the write lock. Each expired key is a
# page of its own to rewrite (keys are in key order, not expiry order): with 3 million keys and a backlog of
# expired ones, 2000 a heartbeat held the lock 37 ms a second (p99 of small writes 31 ms), 500 held it 4 ms
# (p99 8 ms; bench/idempotency.py). 500 a second still expires 43 million keys a day; an expired key that
# waits its turn is only disk space, since `publish` takes a key past its window as new.
_EXPIRE_KEYS = 500
# The stream bus: how often a process looks for other processes' stream changes while anyone watches (the
# latency a change made in another process adds), and how many of the newest rows are kept. A reader more
# than STREAM_BUS rows behind misses some: changes it then reads from the change log, events are gone.
BUS_POLL = 0.02
STREAM_BUS = 10_000

# The tables a SqliteStateStore may keep its values in (the same shape): the user's, and Stepline's own.
_STATE_TABLES = ("state", "control")

_EVENT = "id, step, event_id, topic, data, trace_id, emitted_by, created_at, message_group_id"
_EVENT_COLUMNS = f"{_EVENT}, attempts"


def _delivery(row: sqlite3.Row | tuple[Any, ...], lost: bool = False, resumed: bool = False) -> Delivery:
    did, step, event_id, topic, data, trace_id, emitted_by, created_at, group, attempts = row[:10]
    event = Event(event_id, topic, _json.loads(data), trace_id, emitted_by, created_at, group)
    return Delivery(did, event, step, attempts, lost, resumed)


class SqliteEventQueue:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        poll: float = _POLL,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self._db = db.acquire()
        self._clock = clock
        self._poll = poll
        self._stale_after = stale_after
        self._wakeup = asyncio.Event()
        self.owner = new_id()
        self._pid = os.getpid()
        db.every(HEARTBEAT, self._heartbeat)

    def _heartbeat(self, conn: sqlite3.Connection) -> None:
        """Say this worker lives; hand out again the leases of workers that stopped saying so."""
        now = self._clock()
        conn.execute(
            "INSERT OR REPLACE INTO workers (owner, pid, heartbeat_at) VALUES (?, ?, ?)", (self.owner, self._pid, now)
        )
        # A dead worker's runs never finished: each counts as a lost attempt (see Delivery.lost).
        conn.execute(
            "UPDATE deliveries SET leased = 0, lost = 1, owner = NULL, visible_at = ? WHERE leased = 1 AND owner IN "
            "(SELECT owner FROM workers WHERE heartbeat_at < ?)",
            (now, now - self._stale_after),
        )
        conn.execute("DELETE FROM workers WHERE heartbeat_at < ?", (now - self._stale_after,))
        conn.execute(
            "DELETE FROM idempotency_keys WHERE key IN "
            "(SELECT key FROM idempotency_keys WHERE expires_at < ? ORDER BY expires_at LIMIT ?)",
            (now, _EXPIRE_KEYS),
        )

    async def publish(
        self,
        event: Event,
        subscribers: Mapping[str, float],
        idempotency_key: str | None = None,
        idempotency_window: float = 86400.0,
    ) -> bool:
        data = _json.dumps(event.data)
        rows = [
            (
                new_id(),
                step,
                event.id,
                event.topic,
                data,
                event.trace_id,
                event.emitted_by,
                event.created_at,
                event.message_group_id,
            )
            for step in subscribers
        ]
        delays = list(subscribers.values())

        def publish(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            if idempotency_key is not None:
                cur = conn.execute(
                    "INSERT INTO idempotency_keys (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                    "SET expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= ?",
                    (idempotency_key, now + idempotency_window, now),
                )
                if cur.rowcount == 0:
                    return False
            conn.executemany(
                f"INSERT INTO deliveries ({_EVENT}, visible_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(*row, now + delay) for row, delay in zip(rows, delays, strict=True)],
            )
            return True

        accepted = await self._db.write(publish)
        self._wakeup.set()
        return accepted

    async def claim(self, specs: Mapping[str, ClaimSpec], limit: int) -> list[Delivery]:
        if not specs or limit <= 0:
            return []

        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            now = self._clock()
            capacity: dict[str, int | None] = {step: spec.concurrency for step, spec in specs.items()}
            if any(cap is not None for cap in capacity.values()):
                busy = dict(
                    conn.execute(
                        "SELECT step, COUNT(*) FROM deliveries WHERE leased = 1 AND visible_at > ? GROUP BY step",
                        (now,),
                    ).fetchall()
                )
                for step, cap in capacity.items():
                    if cap is not None:
                        capacity[step] = cap - busy.get(step, 0)
            active = {s: c for s, c in capacity.items() if c is None or c > 0}
            if not active:
                return []
            values = ",".join(f"(:s{i}, :l{i}, :f{i}, :c{i})" for i in range(len(active)))
            params: dict[str, Any] = {"now": now, "limit": limit, "owner": self.owner}
            for i, (step, cap) in enumerate(active.items()):
                params |= {f"s{i}": step, f"l{i}": specs[step].lease, f"f{i}": int(specs[step].fifo), f"c{i}": cap}
            fifo = (
                "(s.fifo = 0 OR d.seq = (SELECT MIN(g.seq) FROM deliveries g WHERE g.step = d.step "
                "AND g.message_group_id IS d.message_group_id))"
            )
            if any(c is not None for c in active.values()):
                pick = (
                    f"SELECT seq FROM (SELECT d.seq, d.step, ROW_NUMBER() OVER (PARTITION BY d.step "
                    f"ORDER BY d.seq) AS rn FROM deliveries d JOIN spec s ON s.step = d.step "
                    f"WHERE d.visible_at <= :now AND {fifo}) c JOIN spec s ON s.step = c.step "
                    f"WHERE s.cap IS NULL OR c.rn <= s.cap ORDER BY c.seq LIMIT :limit"
                )
            else:
                pick = (
                    f"SELECT d.seq FROM deliveries d JOIN spec s ON s.step = d.step "
                    f"WHERE d.visible_at <= :now AND {fifo} ORDER BY d.seq LIMIT :limit"
                )
            # A row still leased here has a lease that ran out: its attempt was lost (SET reads the old row).
            sql = (
                f"WITH spec (step, lease, fifo, cap) AS (VALUES {values}) "
                f"UPDATE deliveries SET attempts = attempts + 1, leased = 1, owner = :owner, "
                f"lost = (lost OR leased), suspended = 0, woken = 0, "
                f"visible_at = :now + (SELECT lease FROM spec WHERE spec.step = deliveries.step) "
                f"WHERE seq IN ({pick}) RETURNING {_EVENT_COLUMNS}, seq, lost, resumed"
            )
            rows = conn.execute(sql, params).fetchall()
            rows.sort(key=lambda r: r[10])
            return [_delivery(r, bool(r[11]), bool(r[12])) for r in rows]

        return await self._db.write(claim)

    async def renew(self, leases: Sequence[tuple[Delivery, float]]) -> list[Delivery]:
        if not leases:
            return []

        # One statement for them all (a statement per lease takes the GIL back per lease, every second).
        batch = _json.dumps([[d.id, d.attempt, seconds] for d, seconds in leases]).decode()

        def renew(conn: sqlite3.Connection) -> list[Delivery]:
            held = conn.execute(
                "UPDATE deliveries SET visible_at = :now + j.value->>2 FROM json_each(:batch) j "
                "WHERE deliveries.id = j.value->>0 AND deliveries.attempts = j.value->>1 AND deliveries.leased = 1",
                {"now": self._clock(), "batch": batch},
            ).rowcount
            if held == len(leases):
                return []
            still = {
                (i, a)
                for i, a in conn.execute(
                    "SELECT id, attempts FROM deliveries "
                    "WHERE leased = 1 AND id IN (SELECT value->>0 FROM json_each(?))",
                    (batch,),
                )
            }
            return [d for d, _ in leases if (d.id, d.attempt) not in still]

        return await self._db.write(renew)

    async def ack(self, delivery: Delivery) -> None:
        def ack(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM deliveries WHERE id = ? AND attempts = ? AND leased = 1", (delivery.id, delivery.attempt)
            )

        await self._db.write(ack)
        self._wakeup.set()  # the next message of its FIFO group may now go

    async def retry(self, delivery: Delivery, delay: float, error: str, *, counts: bool = True) -> None:
        def retry(conn: sqlite3.Connection) -> None:
            given_back = 0 if counts else 1
            conn.execute(
                "UPDATE deliveries SET leased = 0, lost = 0, owner = NULL, visible_at = ?, attempts = attempts - ?, "
                "resumed = resumed OR ? WHERE id = ? AND attempts = ? AND leased = 1",
                (self._clock() + delay, given_back, given_back, delivery.id, delivery.attempt),
            )

        await self._db.write(retry)
        self._wakeup.set()

    async def suspend(self, delivery: Delivery, until: float | None) -> None:
        def suspend(conn: sqlite3.Connection) -> None:
            now = self._clock()
            conn.execute(
                "UPDATE deliveries SET leased = 0, lost = 0, owner = NULL, attempts = attempts - 1, resumed = 1, "
                "suspended = 1 - woken, visible_at = CASE woken WHEN 1 THEN ? ELSE ? END, woken = 0 "
                "WHERE id = ? AND attempts = ? AND leased = 1",
                (now, FOREVER if until is None else until, delivery.id, delivery.attempt),
            )

        await self._db.write(suspend)
        self._wakeup.set()

    async def wake(self, delivery_id: str) -> bool:
        def wake(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            row = conn.execute(
                "UPDATE deliveries SET woken = leased, suspended = 0, "
                "visible_at = CASE WHEN leased = 0 AND suspended = 1 THEN MIN(visible_at, ?) ELSE visible_at END "
                "WHERE id = ? RETURNING leased",
                (now, delivery_id),
            ).fetchone()
            return row is not None

        woken = await self._db.write(wake)
        self._wakeup.set()
        return woken

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str | None) -> None:
        def dead_letter(conn: sqlite3.Connection) -> None:
            moved = conn.execute(
                f"INSERT INTO dead_letters ({_EVENT_COLUMNS}, error, traceback, failed_at) "
                f"SELECT {_EVENT_COLUMNS}, ?, ?, ? FROM deliveries WHERE id = ? AND attempts = ? AND leased = 1",
                (error, traceback, self._clock(), delivery.id, delivery.attempt),
            ).rowcount
            if moved:
                conn.execute("DELETE FROM deliveries WHERE id = ?", (delivery.id,))

        await self._db.write(dead_letter)
        self._wakeup.set()

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        def read(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS}, error, traceback, failed_at FROM dead_letters "
                f"ORDER BY failed_at, id LIMIT ?",
                (limit,),
            ).fetchall()
            out = []
            for row in rows:
                d = _delivery(row)
                out.append(DeadLetter(d.id, d.event, d.step, d.attempt, row[10], row[11], row[12]))
            return out

        return await self._db.read(read)

    async def replay(self, delivery_id: str) -> bool:
        def replay(conn: sqlite3.Connection) -> bool:
            moved = conn.execute(
                f"INSERT INTO deliveries ({_EVENT_COLUMNS}, visible_at) "
                f"SELECT {_EVENT}, 0, ? FROM dead_letters WHERE id = ?",
                (self._clock(), delivery_id),
            ).rowcount
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (delivery_id,))
            return bool(moved)

        replayed = await self._db.write(replay)
        self._wakeup.set()
        return replayed

    async def purge(self, delivery_ids: Sequence[str] | None = None) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            if delivery_ids is None:
                return conn.execute("DELETE FROM dead_letters").rowcount
            return conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in delivery_ids]).rowcount

        return await self._db.write(purge)

    async def stats(self, horizon: float | None = None) -> QueueStats:
        def stats(conn: sqlite3.Connection) -> QueueStats:
            now = self._clock()
            until = now + horizon if horizon is not None else float("inf")
            ready, delayed, in_flight, later = conn.execute(
                "SELECT COALESCE(SUM(visible_at <= :now), 0), "
                "COALESCE(SUM(visible_at > :now AND leased = 0 AND visible_at <= :until), 0), "
                "COALESCE(SUM(visible_at > :now AND leased = 1), 0), "
                "COALESCE(SUM(leased = 0 AND visible_at > :until), 0) FROM deliveries",
                {"now": now, "until": until},
            ).fetchone()
            dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            return QueueStats(ready, delayed, in_flight, dead, later)

        return await self._db.read(stats)

    async def backlog(self, step: str) -> int:
        def count(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute("SELECT COUNT(*) FROM deliveries WHERE step = ? AND suspended = 0", (step,)).fetchone()[0]
            )

        return await self._db.read(count)

    async def wait(self, timeout: float) -> None:
        """Other processes write to the same file unseen, so this returns at least every `poll` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), min(timeout, self._poll))
        self._wakeup.clear()

    async def close(self) -> None:
        def leave(conn: sqlite3.Connection) -> None:
            # Leases still held (handlers cancelled at shutdown) go back at once, not after stale_after; their
            # runs did not finish, so they count as lost attempts.
            conn.execute(
                "UPDATE deliveries SET leased = 0, lost = 1, owner = NULL, visible_at = ? "
                "WHERE owner = ? AND leased = 1",
                (self._clock(), self.owner),
            )
            conn.execute("DELETE FROM workers WHERE owner = ?", (self.owner,))

        try:
            await self._db.write(leave)
        except StoreError as exc:  # a full disk at shutdown: the leases run out instead, nothing is lost
            log.warning("this worker's leases could not be given back at shutdown (%s); they run out instead", exc)
        await self._db.release()


class SqliteStateStore:
    """JSON values by (group, key) in one table: `state` (the user's) or `control` (Stepline's own records)."""

    def __init__(self, db: Database, table: str = "state") -> None:
        if table not in _STATE_TABLES:  # it is written into the SQL, so only a known name
            raise ValueError(f"a state store's table is one of {', '.join(_STATE_TABLES)}, not {table!r}")
        self._get = f"SELECT value FROM {table} WHERE grp = ? AND key = ?"
        self._set = f"INSERT OR REPLACE INTO {table} (grp, key, value) VALUES (?, ?, ?)"
        self._delete = f"DELETE FROM {table} WHERE grp = ? AND key = ?"
        self._get_group = f"SELECT key, value FROM {table} WHERE grp = ? ORDER BY key"
        self._clear = f"DELETE FROM {table} WHERE grp = ?"
        self._groups = f"SELECT DISTINCT grp FROM {table} ORDER BY grp"
        self._db = db.acquire()
        self._closed = False

    async def get(self, group: str, key: str) -> Any:
        def get(conn: sqlite3.Connection) -> Any:
            row = conn.execute(self._get, (group, key)).fetchone()
            return None if row is None else _json.loads(row[0])

        return await self._db.read(get)

    async def set(self, group: str, key: str, value: Any) -> None:
        raw = _json.dumps(value, f"state value {group}/{key}")
        await self._db.write(lambda conn: conn.execute(self._set, (group, key, raw)))

    async def update(self, group: str, key: str, op: StateUpdate) -> UpdateResult:
        def update(conn: sqlite3.Connection) -> UpdateResult:
            row = conn.execute(self._get, (group, key)).fetchone()
            current = None if row is None else _json.loads(row[0])
            result = _updates.apply(current, op, f"state {group}/{key}")
            if result.applied:
                conn.execute(self._set, (group, key, _json.dumps(result.value, f"state value {group}/{key}")))
            return result

        return await self._db.write(update)

    async def delete(self, group: str, key: str) -> bool:
        return await self._db.write(lambda conn: conn.execute(self._delete, (group, key)).rowcount > 0)

    async def get_group(self, group: str) -> dict[str, Any]:
        def get_group(conn: sqlite3.Connection) -> dict[str, Any]:
            return {k: _json.loads(v) for k, v in conn.execute(self._get_group, (group,))}

        return await self._db.read(get_group)

    async def clear(self, group: str) -> int:
        return await self._db.write(lambda conn: conn.execute(self._clear, (group,)).rowcount)

    async def groups(self) -> list[str]:
        return await self._db.read(lambda conn: [r[0] for r in conn.execute(self._groups)])

    async def close(self) -> None:
        # Once only: the state and control stores share one Database with the others, and a second release
        # would close it under them.
        if not self._closed:
            self._closed = True
            await self._db.release()


class SqliteTraceStore:
    def __init__(self, db: Database) -> None:
        self._db = db.acquire()

    async def append(self, records: Sequence[TraceRecord]) -> None:
        by_trace: dict[str, list[TraceRecord]] = {}
        for r in records:
            by_trace.setdefault(r.trace_id, []).append(r)
        parts = []
        for trace_id, rs in by_trace.items():
            s = summarize(trace_id, rs)
            parts.append(
                (
                    trace_id,
                    s.entry,
                    s.started_at,
                    s.last_at,
                    s.records,
                    s.errors,
                    [[r.kind, r.step, r.ts, r.data] for r in rs],
                )
            )
        # The whole batch is one JSON parameter that SQLite unpacks itself: one statement, run with the
        # GIL released, instead of a row at a time between the engine's requests.
        batch = _json.dumps(parts, "a trace record").decode()  # text: SQLite 3.45+ reads a BLOB as JSONB

        def append(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO trace_parts (trace_id, entry, first_at, last_at, records, errors, data) "
                "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->6 "
                "FROM json_each(?)",
                (batch,),
            )

        await self._db.write(append)

    async def trace(self, trace_id: str) -> list[TraceRecord]:
        def trace(conn: sqlite3.Connection) -> list[TraceRecord]:
            rows = conn.execute("SELECT data FROM trace_parts WHERE trace_id = ? ORDER BY id", (trace_id,))
            return [TraceRecord(trace_id, k, s, ts, d) for (part,) in rows for k, s, ts, d in _json.loads(part)]

        return await self._db.read(trace)

    async def recent(self, limit: int = 50) -> list[TraceSummary]:
        # A trace starts at its first part: walk the parts newest first, keep those with no earlier part.
        def recent(conn: sqlite3.Connection) -> list[TraceSummary]:
            rows = conn.execute(
                "WITH firsts AS (SELECT id, trace_id, entry FROM trace_parts p WHERE NOT EXISTS "
                "(SELECT 1 FROM trace_parts q WHERE q.trace_id = p.trace_id AND q.id < p.id) "
                "ORDER BY id DESC LIMIT ?) "
                "SELECT f.trace_id, f.entry, MIN(p.first_at), MAX(p.last_at), SUM(p.records), SUM(p.errors) "
                "FROM firsts f JOIN trace_parts p ON p.trace_id = f.trace_id GROUP BY f.id ORDER BY f.id DESC",
                (limit,),
            )
            return [TraceSummary(*row) for row in rows]

        return await self._db.read(recent)

    async def size(self) -> int:
        """The bytes the database file holds in use (its pages less its free ones): traces are most of it, and
        counting the file rather than each row costs the writes nothing (counting each row cost a chain of
        three steps 5-8% of its throughput on one worker)."""
        return await self._db.read(_used_bytes)

    async def prune(self, older_than: float, max_bytes: int | None = None) -> int:
        # Parts are written in time order, give or take a flush: the old ones are the first rows, so the
        # scan stops at the first recent part instead of reading the whole table. They go a range of
        # rows per transaction, so a large prune never holds up the writer for long.
        def bounds(conn: sqlite3.Connection) -> tuple[int, int]:
            first = conn.execute("SELECT MIN(id) FROM trace_parts").fetchone()[0]
            recent = conn.execute(
                "SELECT id FROM trace_parts WHERE last_at >= ? ORDER BY id LIMIT 1", (older_than,)
            ).fetchone()
            end = recent[0] if recent else conn.execute("SELECT MAX(id) + 1 FROM trace_parts").fetchone()[0]
            return (first or 0), (end or 0)

        def prune_range(lo: int, hi: int, conn: sqlite3.Connection) -> int:
            old = conn.execute(
                "SELECT trace_id FROM trace_parts WHERE trace_id IN "
                "(SELECT trace_id FROM trace_parts WHERE id >= ? AND id < ?) "
                "GROUP BY trace_id HAVING MAX(last_at) < ?",
                (lo, hi, older_than),
            ).fetchall()
            return _delete_traces(conn, [t for (t,) in old])

        def prune_oldest(target: int, conn: sqlite3.Connection) -> int:
            """Over the size cap: the traces of the oldest parts go, a bounded number per transaction."""
            excess = _used_bytes(conn) - target
            if excess <= 0:
                return 0
            doomed: dict[str, None] = {}  # oldest first, about enough of them to bring the file under the cap
            freed = 0
            for trace_id, size in conn.execute(
                "SELECT trace_id, length(data) FROM trace_parts ORDER BY id LIMIT ?", (_CAP_ROWS,)
            ):
                if freed >= excess and trace_id not in doomed:
                    break
                doomed[trace_id] = None
                freed += size
            return _delete_traces(conn, list(doomed))

        lo, end = await self._db.read(bounds)
        removed = 0
        while lo < end:
            hi = min(lo + _PRUNE_ROWS, end)
            removed += await self._db.write(partial(prune_range, lo, hi))
            lo = hi
        if max_bytes is not None and await self.size() > max_bytes:
            # Down to 90% of the cap, so that the next check does not prune again straight away.
            target = int(max_bytes * 0.9)
            while went := await self._db.write(partial(prune_oldest, target)):
                removed += went
        return removed

    async def close(self) -> None:
        await self._db.release()


def _delete_traces(conn: sqlite3.Connection, trace_ids: list[str]) -> int:
    conn.executemany("DELETE FROM trace_parts WHERE trace_id = ?", [(t,) for t in trace_ids])
    return len(trace_ids)


def _used_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages * conn.execute("PRAGMA page_size").fetchone()[0])


class SqliteStreamStore:
    """Stream items in stream_items; each change takes the group's next number (stream_groups) and goes into
    stream_log, in the same transaction as the item, trimmed to the newest STREAM_LOG per group."""

    def __init__(self, db: Database) -> None:
        self._db = db.acquire()
        self._origin = new_id()  # this process, in the bus rows it writes: its listener skips them

    @staticmethod
    def _next(conn: sqlite3.Connection, stream: str, group: str) -> int:
        row = conn.execute(
            "INSERT INTO stream_groups (stream, grp, seq) VALUES (?, ?, 1) "
            "ON CONFLICT (stream, grp) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (stream, group),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _log(conn: sqlite3.Connection, change: StreamChange, raw: bytes | None) -> None:
        conn.execute(
            "INSERT INTO stream_log (stream, grp, seq, id, op, value) VALUES (?, ?, ?, ?, ?, ?)",
            (change.stream, change.group, change.seq, change.id, change.op, raw),
        )
        if change.seq > STREAM_LOG:
            conn.execute(
                "DELETE FROM stream_log WHERE stream = ? AND grp = ? AND seq <= ?",
                (change.stream, change.group, change.seq - STREAM_LOG),
            )

    def _bus(
        self, conn: sqlite3.Connection, stream: str, group: str, id: str | None, op: str, seq: int | None, raw: Any
    ) -> None:
        pos = conn.execute(
            "INSERT INTO stream_bus (origin, stream, grp, id, op, seq, value) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "RETURNING pos",
            (self._origin, stream, group, id, op, seq, raw),
        ).fetchone()[0]
        if pos % 256 == 0:  # trimmed now and then, not on every write
            conn.execute("DELETE FROM stream_bus WHERE pos <= ?", (pos - STREAM_BUS,))

    async def set(self, stream: str, group: str, id: str, item: Any) -> StreamChange:
        raw = _json.dumps(item, f"stream item {stream}/{group}/{id}")

        def write(conn: sqlite3.Connection) -> StreamChange:
            existed = conn.execute(
                "SELECT 1 FROM stream_items WHERE stream = ? AND grp = ? AND id = ?", (stream, group, id)
            ).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO stream_items (stream, grp, id, value) VALUES (?, ?, ?, ?)",
                (stream, group, id, raw),
            )
            op: Literal["create", "update"] = "update" if existed else "create"
            change = StreamChange(stream, group, id, op, _json.loads(raw), self._next(conn, stream, group))
            self._log(conn, change, raw)
            self._bus(conn, stream, group, id, op, change.seq, raw)
            return change

        return await self._db.write(write)

    async def delete(self, stream: str, group: str, id: str) -> StreamChange | None:
        def write(conn: sqlite3.Connection) -> StreamChange | None:
            gone = conn.execute(
                "DELETE FROM stream_items WHERE stream = ? AND grp = ? AND id = ?", (stream, group, id)
            ).rowcount
            if not gone:
                return None
            change = StreamChange(stream, group, id, "delete", None, self._next(conn, stream, group))
            self._log(conn, change, None)
            self._bus(conn, stream, group, id, "delete", change.seq, None)
            return change

        return await self._db.write(write)

    async def get(self, stream: str, group: str, id: str) -> Any:
        def read(conn: sqlite3.Connection) -> Any:
            row = conn.execute(
                "SELECT value FROM stream_items WHERE stream = ? AND grp = ? AND id = ?", (stream, group, id)
            ).fetchone()
            return None if row is None else _json.loads(row[0])

        return await self._db.read(read)

    async def snapshot(self, stream: str, group: str) -> tuple[dict[str, Any], int]:
        def read(conn: sqlite3.Connection) -> tuple[dict[str, Any], int]:
            # (Each job runs in a transaction of its batch: the items and the number are of the same moment.)
            items = conn.execute(
                "SELECT id, value FROM stream_items WHERE stream = ? AND grp = ?", (stream, group)
            ).fetchall()
            row = conn.execute("SELECT seq FROM stream_groups WHERE stream = ? AND grp = ?", (stream, group)).fetchone()
            return {i: _json.loads(v) for i, v in items}, int(row[0]) if row else 0

        return await self._db.read(read)

    async def changes(self, stream: str, group: str, since: int) -> list[StreamChange] | None:
        def read(conn: sqlite3.Connection) -> list[StreamChange] | None:
            row = conn.execute("SELECT seq FROM stream_groups WHERE stream = ? AND grp = ?", (stream, group)).fetchone()
            seq = int(row[0]) if row else 0
            rows = conn.execute(
                "SELECT seq, id, op, value FROM stream_log WHERE stream = ? AND grp = ? AND seq > ? ORDER BY seq",
                (stream, group, since),
            ).fetchall()
            if since > seq:
                return None  # a number this group has not reached: the store was reset since
            if since == seq:
                return []
            if not rows or rows[0][0] > since + 1:
                return None  # some of the changes after `since` are gone from the log
            return [
                StreamChange(stream, group, i, op, None if v is None else _json.loads(v), n) for n, i, op, v in rows
            ]

        return await self._db.read(read)

    async def groups(self, stream: str) -> list[tuple[str, int, int]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
            rows = conn.execute(
                "SELECT g.grp, (SELECT count(*) FROM stream_items i WHERE i.stream = g.stream AND i.grp = g.grp), "
                "g.seq FROM stream_groups g WHERE g.stream = ? ORDER BY g.grp",
                (stream,),
            ).fetchall()
            return [(str(g), int(n), int(q)) for g, n, q in rows]

        return await self._db.read(read)

    async def send(self, event: StreamEvent) -> None:
        raw = _json.dumps(event.event, f"an event for stream {event.stream}/{event.group}")
        await self._db.write(lambda conn: self._bus(conn, event.stream, event.group, event.id, "event", None, raw))

    async def listen(self) -> AsyncIterator[list[StreamChange | StreamEvent]]:
        """Polls the bus (SQLite has no notifications): every BUS_POLL seconds while listened to."""

        def newest(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT coalesce(max(pos), 0) FROM stream_bus").fetchone()[0])

        def after(pos: int) -> Callable[[sqlite3.Connection], list[tuple[Any, ...]]]:
            return lambda conn: conn.execute(
                "SELECT pos, stream, grp, id, op, seq, value FROM stream_bus WHERE pos > ? AND origin != ? "
                "ORDER BY pos LIMIT 1000",
                (pos, self._origin),
            ).fetchall()

        last = await self._db.read(newest)
        yield []  # listening from here on
        while True:
            try:
                rows = await self._db.read(after(last))
            except StoreError as exc:  # not fatal: the hub fills the gaps from the change log afterwards
                log.warning("reading other processes' stream changes failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            if not rows:
                await asyncio.sleep(BUS_POLL)
                continue
            last = rows[-1][0]
            batch: list[StreamChange | StreamEvent] = []
            for _, stream, group, id, op, seq, raw in rows:
                data = None if raw is None else _json.loads(raw)
                if seq is None:
                    batch.append(StreamEvent(stream, group, id, data))
                else:
                    batch.append(StreamChange(stream, group, id, op, data, int(seq)))
            yield batch

    async def close(self) -> None:
        await self._db.release()


class SqliteCronLock:
    def __init__(self, db: Database) -> None:
        self._db = db.acquire()

    async def claim_tick(self, step: str, tick: float) -> bool:
        return await self._db.write(
            lambda conn: (
                conn.execute(
                    "INSERT INTO cron_ticks (step, tick) VALUES (?, ?) ON CONFLICT (step) DO UPDATE "
                    "SET tick = excluded.tick WHERE cron_ticks.tick < excluded.tick",
                    (step, tick),
                ).rowcount
                > 0
            )
        )

    async def last_tick(self, step: str) -> float | None:
        def last(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT tick FROM cron_ticks WHERE step = ?", (step,)).fetchone()
            return None if row is None else float(row[0])

        return await self._db.read(last)

    async def close(self) -> None:
        await self._db.release()


def open_sqlite(
    path: str | Path,
    *,
    synchronous: Synchronous = "NORMAL",
    clock: Callable[[], float] = time.time,
    poll: float = _POLL,
    busy_timeout: float = 30.0,
    health: Health | None = None,
    stale_after: float = STALE_AFTER,
) -> Adapters:
    """The adapters on one database file (user state and Stepline's control records in two tables of it),
    sharing one writer thread.

    `busy_timeout` is how long an operation waits for a write lock another process holds before it fails
    with StoreUnavailableError; `health` hears of failing background work (the heartbeat)."""
    db = Database(path, synchronous=synchronous, busy_timeout=busy_timeout, health=health)
    return Adapters(
        SqliteEventQueue(db, clock, poll, stale_after),
        SqliteStateStore(db),
        SqliteTraceStore(db),
        SqliteCronLock(db),
        SqliteStateStore(db, table="control"),
        db.health,
        streams=SqliteStreamStore(db),
    )


DEFAULT_FILE = Path(".stepline") / "stepline.db"
_OPTIONS = {
    "sync": "normal, or full to fsync every commit",
    "busy_timeout": "seconds to wait for a write lock another process holds; default 30",
}


def open_url(url: StoreURL, options: StoreOptions) -> Adapters:
    """`sqlite:///relative/to/root.db` or `sqlite:////absolute.db`; `sqlite://` alone is the default file."""
    if url.netloc:
        raise url.refuse(
            f"has a host ({url.netloc}), but a SQLite store is a file",
            f"write sqlite:///{url.netloc}{url.path} for a path relative to the project, "
            f"or sqlite:////{url.netloc}{url.path} for an absolute one",
        )
    query = url.options(_OPTIONS)
    sync = query.get("sync", "normal").upper()
    if sync not in ("NORMAL", "FULL"):
        raise url.refuse(f"sets sync={query['sync']}", "write sync=normal or sync=full")
    try:
        busy_timeout = float(query.get("busy_timeout", "30"))
    except ValueError:
        busy_timeout = -1.0
    if not busy_timeout >= 0:  # also refuses nan
        raise url.refuse(f"sets busy_timeout={query['busy_timeout']}", "give it in seconds, like busy_timeout=30")
    # urlsplit leaves the path's first slash on: "/rel.db" is relative, "//abs.db" absolute.
    relative = url.path[1:] if url.path.startswith("/") else url.path
    path = options.root / (relative or DEFAULT_FILE)
    if options.must_exist and not path.exists():
        raise StoreError(
            f"there is no database at {path}",
            fix="run the project first (stepline dev or start), or point --store (or --dir) at its database",
        )
    return open_sqlite(
        path,
        synchronous="FULL" if sync == "FULL" else "NORMAL",
        busy_timeout=busy_timeout,
        clock=options.clock.time,
        health=options.health,
        stale_after=options.stale_after,
    )
