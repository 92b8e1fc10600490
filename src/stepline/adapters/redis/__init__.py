"""Redis adapters: the scale-out store. Any number of processes on any number of hosts share one Redis.

    redis://127.0.0.1:6379/0                the database 0 of a local server
    rediss://:password@host:6380/0          TLS, with a password (never shown in logs)
    ?prefix=shop                            keys under {shop}: (default {stepline}), so apps can share a server
    ?volatile=true                          accept a server that can lose data (no AOF, or evicting): development
    ?timeout=5                              seconds an operation may take before it fails (default 5)

Deliveries live in sorted sets changed by Lua scripts (see scripts.py for the keys): one script
per change, so that a publish, a claim, an ack or a retry is atomic against every other process. Leases are
fenced by (delivery id, attempt); workers heartbeat, and the leases of a worker silent for `stale_after`
seconds go back to the queue within seconds, however long its steps' visibility timeouts are.

What a crash can lose (docs/redis.md): Redis answers before its append-only file reaches the disk. With
`appendfsync everysec` a crash of the server's host loses at most the last second of accepted events; with
`always`, nothing. A Redis that keeps no AOF loses everything at a restart, and one that evicts keys drops
queued events when memory runs short: Stepline refuses both unless `?volatile=true` says that is meant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from stepline import _json
from stepline._clock import SYSTEM_CLOCK, Clock, sleep_until_set
from stepline._errors import StoreError, StoreUnavailableError
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
    Increment,
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
from stepline.adapters.redis import scripts

log = logging.getLogger("stepline.redis")

T = TypeVar("T")
HEARTBEAT = 1.0
# A waiting worker looks again at least this often, even with no news on the wake channel (a message can be
# missed while the channel reconnects).
_POLL = 1.0
_MIN_VERSION = (6, 2)  # ZADD GT, ZRANGE ... WITHSCORES as the scripts use them
MAX_CONNECTIONS = 128  # per process: a Redis serves 10,000 clients by default
_NONE_GROUP = "~"  # the group key of events without a message group (named groups are "=" + name)


def _group_key(group: str | None) -> str:
    return _NONE_GROUP if group is None else "=" + group


def _packed_by_hiredis(cls: type[Any]) -> type[Any]:
    """`cls` packing commands with hiredis's C packer. redis-py's asyncio connections pack in Python even
    with hiredis installed (its sync ones do not): that was a fifth of a worker's CPU per delivery (cProfile
    of bench/peers/stepline_driver.py --store redis), the scripts' arguments encoded one by one."""
    if not HIREDIS_AVAILABLE:
        return cls
    packer = HiredisRespSerializer()

    class Packed(cls):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            packed: list[bytes] = packer.pack(*args)
            return packed

    Packed.__name__ = Packed.__qualname__ = f"Hiredis{cls.__name__}"
    return Packed


class Connection:
    """One Redis client and its scripts, shared by the adapters of one store, and the check of the server's
    durability settings, made before the first operation (and again after a lost connection)."""

    def __init__(self, url: str, shown: str, prefix: str, *, volatile: bool, timeout: float) -> None:
        self.prefix = "{" + prefix + "}"
        self.shown = shown
        self.volatile = volatile
        # No retries inside the client: a script sent again after a lost reply could run twice. The engine
        # retries the whole operation, with backoff, and reports it (health); an emit fails at once (503).
        # Any: redis-py types each reply as every shape a reply can take (bytes | str | list | ...), which
        # says less than the scripts' own comments do.
        # A blocking pool: past MAX_CONNECTIONS operations at once (an API process under a burst, 10,000 emits
        # gathered), an operation waits for a connection (up to `timeout`), where redis-py's default pool of
        # 100 fails it with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            socket_connect_timeout=min(timeout, 2.0),
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=10,
        )
        self.client: Any = aioredis.Redis.from_pool(pool)
        pool.connection_class = _packed_by_hiredis(pool.connection_class)
        self._scripts = {
            name: self.client.register_script(getattr(scripts, name))
            for name in (
                "PUBLISH", "CLAIM", "RENEW", "ACK", "RETRY", "SUSPEND", "WAKE", "RELEASE", "DEAD_LETTER", "REPLAY",
                "PURGE", "STATS", "HEARTBEAT", "LEAVE", "INCREMENT", "SET", "SWAP", "DELETE", "CLEAR", "APPEND",
                "DROP_TRACES", "CLAIM_TICK", "STREAM_SET", "STREAM_DELETE", "STREAM_SNAPSHOT", "STREAM_CHANGES",
            )
        }  # fmt: skip
        self._checked = False
        self._check_lock: asyncio.Lock | None = None
        self._users = 0
        self.key = f"{self.prefix}:seq"  # the key scripts name, so that a Cluster routes them to the prefix's slot

    def acquire(self) -> Connection:
        self._users += 1
        return self

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self.client.aclose()

    async def script(self, name: str, *args: Any) -> Any:
        return await self.run(lambda: self._scripts[name](keys=[self.key], args=[self.prefix, *args]))

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` on the client, the server checked first; driver errors become StoreErrors."""
        try:
            if not self._checked:
                await self._check()
            return await operation()
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            self._checked = False  # the server may have restarted with other settings
            raise StoreUnavailableError(
                f"Redis at {self.shown} cannot be reached",
                reason=str(exc),
                fix="check that it runs and that the store URL names it; work resumes by itself once it answers",
            ) from exc
        except rexc.ResponseError as exc:
            text = str(exc)
            if text.startswith("OOM"):
                raise StoreUnavailableError(
                    f"Redis at {self.shown} is full (maxmemory reached; it takes no writes)",
                    reason=text,
                    fix="raise maxmemory, or let the workers drain the queue; nothing queued was lost",
                ) from exc
            if text.startswith(("READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN")):
                raise StoreUnavailableError(f"Redis at {self.shown} cannot take this now", reason=text) from exc
            raise StoreError(f"Redis at {self.shown} refused an operation", reason=text) from exc
        except rexc.RedisError as exc:
            raise StoreError(f"Redis at {self.shown} failed", reason=str(exc)) from exc
        finally:
            # redis-py 8.1's asyncio client can return normally from a command whose task was cancelled
            # meanwhile, the cancellation lost (a loop around it then never stops: shutdown hangs). Pass it on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    async def verify(self) -> None:
        """The check that every first operation makes, made now (and raised as a StoreError)."""
        await self.run(self._noop)

    async def _noop(self) -> None:
        pass

    async def _check(self) -> None:
        if self._check_lock is None:
            self._check_lock = asyncio.Lock()
        async with self._check_lock:
            if not self._checked:
                await check_server(self.client, self.shown, volatile=self.volatile)
                self._checked = True


async def check_server(client: aioredis.Redis, shown: str, *, volatile: bool) -> dict[str, Any]:
    """Read the server's version, persistence and eviction policy; refuse one that can lose accepted events
    (no AOF, an evicting `maxmemory-policy`) unless `volatile`. Returns what it read."""
    info: dict[str, Any] = await client.info("server")
    info |= await client.info("persistence")
    info |= await client.info("memory")
    version = str(info.get("redis_version", "0"))
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < _MIN_VERSION:
        raise StoreError(
            f"Redis at {shown} is version {version}; Stepline needs 6.2 or newer",
            fix="upgrade the server (Debian 12 has 7.0)",
        )
    aof = str(info.get("aof_enabled", "0")) == "1"
    policy = str(info.get("maxmemory_policy", "noeviction"))
    fsync = "?"
    with contextlib.suppress(rexc.ResponseError):  # CONFIG is disabled on some managed services
        fsync = str((await client.config_get("appendfsync")).get("appendfsync", "?"))
    problems = []
    if not aof:
        problems.append(
            "it keeps no append-only file (appendonly no), so a restart loses every queued event: "
            "run it with `appendonly yes` (redis-cli CONFIG SET appendonly yes, and in redis.conf)"
        )
    if policy != "noeviction":
        problems.append(
            f"it may evict keys when memory runs short (maxmemory-policy {policy}), dropping queued events: "
            "set `maxmemory-policy noeviction` (redis-cli CONFIG SET maxmemory-policy noeviction, and in redis.conf)"
        )
    if problems and not volatile:
        raise StoreError(
            f"Redis at {shown} can lose accepted events: " + "; and ".join(problems),
            fix="change those settings (docs/redis.md), or add ?volatile=true to the store URL to accept the loss "
            "(for development only)",
        )
    if problems:
        log.warning("Redis at %s can lose accepted events (volatile=true accepts it): %s", shown, "; ".join(problems))
    elif fsync == "no":
        log.warning("Redis at %s has appendfsync no: a crash of its host can lose ~30 s of events", shown)
    log.info("Redis %s at %s: appendonly %s, appendfsync %s, maxmemory-policy %s",
             version, shown, "yes" if aof else "no", fsync, policy)  # fmt: skip
    return info


def _event(raw: bytes) -> Event:
    eid, topic, data, trace_id, emitted_by, created_at, group = _json.loads(raw)
    return Event(eid, topic, data, trace_id, emitted_by, created_at, group)


def _num(value: float) -> str:
    return repr(float(value))


class RedisEventQueue:
    def __init__(
        self, conn: Connection, clock: Clock = SYSTEM_CLOCK, stale_after: float = 5.0, health: Health | None = None
    ) -> None:
        self._conn = conn.acquire()
        self._clock = clock
        self._stale_after = stale_after
        self._health = health or Health()
        self.owner = new_id()
        self._wakeup = asyncio.Event()
        self._next_due: float | None = None  # the next delayed delivery's due time, as the last claim saw it
        # The deliveries this queue handed out and has not settled: what it knows it holds. After a claim that
        # failed (it may have run on the server, its reply lost), leases held beyond these go back (RELEASE),
        # rather than waiting out their lease, which is the handler's timeout and more.
        self._held: dict[str, None] = {}
        self._doubt = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(
        self,
        event: Event,
        subscribers: Mapping[str, float],
        idempotency_key: str | None = None,
        idempotency_window: float = 86400.0,
    ) -> bool:
        body = _json.dumps(
            [event.id, event.topic, event.data, event.trace_id, event.emitted_by, event.created_at,
             event.message_group_id]
        )  # fmt: skip
        args: list[Any] = [
            _num(self._clock.time()),
            idempotency_key or "",
            _num(idempotency_window),
            body,
            _group_key(event.message_group_id),
        ]
        if idempotency_key == "":  # an empty key is a key, not "none"
            args[1] = "\x00"
        for step, delay in subscribers.items():
            args += [new_id(), step, _num(delay)]
        accepted = await self._conn.script("PUBLISH", *args)
        self._wakeup.set()
        return bool(accepted)

    async def claim(self, specs: Mapping[str, ClaimSpec], limit: int) -> list[Delivery]:
        if self._heartbeat is None and not self._closed:
            self._heartbeat = asyncio.create_task(self._heartbeats(), name="stepline-redis-heartbeat")
        if limit <= 0:
            return []
        args: list[Any] = [_num(self._clock.time()), limit, self.owner]
        for step, spec in specs.items():
            cap = -1 if spec.concurrency is None else spec.concurrency
            args += [step, _num(spec.lease), int(spec.fifo), cap]
        if self._doubt:
            released = await self._conn.script("RELEASE", self.owner, *self._held)
            self._doubt = False
            if released:
                log.warning("%d deliveries leased by a claim whose reply was lost went back to the queue", released)
        try:
            rows, due = await self._conn.script("CLAIM", *args)  # with no specs, it still moves due delayed ones
        except StoreError:
            self._doubt = True
            raise
        self._next_due = None if due is None else float(due)
        claimed = [
            Delivery(i.decode(), _event(e), s.decode(), int(n), bool(lost), bool(resumed))
            for i, s, n, lost, e, resumed in rows
        ]
        for delivery in claimed:
            self._held[delivery.id] = None
        return claimed

    async def renew(self, leases: Sequence[tuple[Delivery, float]]) -> list[Delivery]:
        if not leases:
            return []
        args: list[Any] = [_num(self._clock.time())]
        for delivery, seconds in leases:
            args += [delivery.id, delivery.attempt, _num(seconds)]
        lost = [leases[int(i)][0] for i in await self._conn.script("RENEW", *args)]
        for delivery in lost:
            self._held.pop(delivery.id, None)
        return lost

    async def ack(self, delivery: Delivery) -> None:
        await self._conn.script("ACK", delivery.id, delivery.attempt)
        self._held.pop(delivery.id, None)
        self._wakeup.set()  # the next message of its FIFO group may now go

    async def retry(self, delivery: Delivery, delay: float, error: str, *, counts: bool = True) -> None:
        now = _num(self._clock.time())
        await self._conn.script("RETRY", delivery.id, delivery.attempt, now, _num(delay), int(counts))
        self._held.pop(delivery.id, None)
        self._wakeup.set()

    async def suspend(self, delivery: Delivery, until: float | None) -> None:
        now = _num(self._clock.time())
        await self._conn.script(
            "SUSPEND", delivery.id, delivery.attempt, now, _num(FOREVER if until is None else until)
        )
        self._held.pop(delivery.id, None)
        self._wakeup.set()

    async def wake(self, delivery_id: str) -> bool:
        woken = await self._conn.script("WAKE", delivery_id, _num(self._clock.time()))
        self._wakeup.set()
        return bool(woken)

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str | None) -> None:
        now = _num(self._clock.time())
        tb = (1, traceback) if traceback is not None else (0, "")
        await self._conn.script("DEAD_LETTER", delivery.id, delivery.attempt, now, error, *tb)
        self._held.pop(delivery.id, None)
        self._wakeup.set()

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        p = self._conn.prefix
        client = self._conn.client

        async def read() -> list[DeadLetter]:
            ids = await client.zrange(f"{p}:dead", 0, limit - 1)
            if not ids:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hmget(f"{p}:dl:{i.decode()}", ["e", "s", "n", "err", "tb", "at"])
                rows = await pipe.execute()
            out = []
            for i, (e, s, n, err, tb, at) in zip(ids, rows, strict=True):
                if e is None:  # purged between the two reads
                    continue
                out.append(
                    DeadLetter(
                        i.decode(), _event(e), s.decode(), int(n), err.decode(),
                        None if tb is None else tb.decode(), float(at),
                    )
                )  # fmt: skip
            return out

        return await self._conn.run(read)

    async def replay(self, delivery_id: str) -> bool:
        replayed = bool(await self._conn.script("REPLAY", delivery_id, _num(self._clock.time())))
        self._wakeup.set()
        return replayed

    async def purge(self, delivery_ids: Sequence[str] | None = None) -> int:
        if delivery_ids is not None and not delivery_ids:
            return 0
        return int(await self._conn.script("PURGE", *(delivery_ids or [])))

    async def stats(self, horizon: float | None = None) -> QueueStats:
        now = self._clock.time()
        until = "+inf" if horizon is None else _num(now + horizon)
        ready, delayed, in_flight, dead, later = await self._conn.script("STATS", _num(now), until)
        return QueueStats(int(ready), int(delayed), int(in_flight), int(dead), int(later))

    async def backlog(self, step: str) -> int:
        raw = await self._conn.run(lambda: self._conn.client.get(f"{self._conn.prefix}:n:{step}"))
        return int(raw or 0)

    async def wait(self, timeout: float) -> None:
        """Until the wake channel says work may be ready, the next delayed delivery is due, or `timeout`."""
        if self._listener is None and not self._closed:
            self._listener = asyncio.create_task(self._listen(), name="stepline-redis-wake")
        seconds = min(timeout, _POLL)
        if self._next_due is not None:  # a delay published since by another process sends a wake message
            seconds = min(seconds, max(0.0, self._next_due - self._clock.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await sleep_until_set(self._clock, seconds, self._wakeup)
        self._wakeup.clear()

    async def _listen(self) -> None:
        """Hear the wake channel: another process published, acked or retried."""
        pause = 0.1
        while not self._closed:
            pubsub = self._conn.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(f"{self._conn.prefix}:wake")
                pause = 0.1
                while not self._closed:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._wakeup.set()
            except (rexc.RedisError, OSError):
                self._wakeup.set()  # missed messages: look at the queue
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _heartbeats(self) -> None:
        while not self._closed:
            try:
                now = self._clock.time()
                await self._conn.script("HEARTBEAT", _num(now), self.owner, _num(now - self._stale_after))
                self._health.recovered("heartbeat")
                await asyncio.sleep(HEARTBEAT)
            except StoreError as exc:
                await asyncio.sleep(
                    min(HEARTBEAT, self._health.failed("heartbeat", exc, "this worker's leases may run out meanwhile"))
                )

    async def close(self) -> None:
        self._closed = True
        for task in (self._heartbeat, self._listener):
            if task is not None:
                # A cancellation can be swallowed inside the client (a read cut short); the loops also stop
                # at the flag, within a second.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 3.0)
        if self._heartbeat is not None:  # it claimed: leases still held (handlers cancelled) go back at once
            try:
                await self._conn.script("LEAVE", _num(self._clock.time()), self.owner)
            except StoreError as exc:
                log.warning("this worker's leases could not be given back at shutdown (%s); they run out instead", exc)
        await self._conn.release()


class RedisStateStore:
    """JSON values by (group, key): a hash per group. `namespace` keeps the user's state ("s") apart from
    Stepline's own records ("c")."""

    def __init__(self, conn: Connection, namespace: str = "s") -> None:
        if namespace not in ("s", "c"):
            raise ValueError(f"a state namespace is s or c, not {namespace!r}")
        self._conn = conn.acquire()
        self._ns = namespace
        self._closed = False

    def _hash(self, group: str) -> str:
        return f"{self._conn.prefix}:{self._ns}:{group}"

    async def get(self, group: str, key: str) -> Any:
        raw = await self._conn.run(lambda: self._conn.client.hget(self._hash(group), key))
        return None if raw is None else _json.loads(raw)

    async def set(self, group: str, key: str, value: Any) -> None:
        await self._conn.script("SET", self._ns, group, key, _json.dumps(value, f"state value {group}/{key}"))

    async def update(self, group: str, key: str, op: StateUpdate) -> UpdateResult:
        where = f"state {group}/{key}"
        if isinstance(op, Increment) and not isinstance(op.by, bool) and abs(op.by) < 2**53:
            is_float = isinstance(op.by, float)
            if not is_float or math.isfinite(op.by):
                raw = await self._conn.script("INCREMENT", self._ns, group, key, repr(op.by), int(is_float))
                if raw is not None:
                    return UpdateResult(True, _json.loads(raw))
        # Anything else (a merge, a compare-and-set, a value an increment cannot add to): read, apply, and
        # write only if the value is still the one read, else read again.
        while True:
            raw = await self._conn.run(lambda: self._conn.client.hget(self._hash(group), key))
            result = _updates.apply(None if raw is None else _json.loads(raw), op, where)
            if not result.applied:
                return result
            new = _json.dumps(result.value, f"state value {group}/{key}")
            missing = int(raw is None)
            if await self._conn.script("SWAP", self._ns, group, key, raw or b"", missing, new):
                return result

    async def delete(self, group: str, key: str) -> bool:
        return bool(await self._conn.script("DELETE", self._ns, group, key))

    async def get_group(self, group: str) -> dict[str, Any]:
        values = await self._conn.run(lambda: self._conn.client.hgetall(self._hash(group)))
        return {k.decode(): _json.loads(values[k]) for k in sorted(values)}

    async def clear(self, group: str) -> int:
        return int(await self._conn.script("CLEAR", self._ns, group))

    async def groups(self) -> list[str]:
        names = await self._conn.run(lambda: self._conn.client.smembers(f"{self._conn.prefix}:{self._ns}g"))
        return sorted(n.decode() for n in names)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._conn.release()


class RedisTraceStore:
    """A list of records per trace, a summary hash per trace, and two indexes: by first appearance (recent)
    and by last record (retention)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn.acquire()
        self._listeners = 0  # live views of this process
        self._heard_at = -1.0  # when the count of live views in the cluster was last read (monotonic)
        self._heard = False

    async def _anyone_listens(self) -> bool:
        """Whether a live view anywhere reads the feed: asked of the server at most once a second, so that
        with no Workbench open a batch costs no second message."""
        if self._listeners:
            return True
        now = asyncio.get_running_loop().time()
        if now - self._heard_at >= 1.0:
            self._heard_at = now
            counts = await self._conn.run(lambda: self._conn.client.pubsub_numsub(f"{self._conn.prefix}:live"))
            self._heard = bool(counts and counts[0][1])
        return self._heard

    async def listen(self) -> AsyncIterator[list[TraceRecord]]:
        self._listeners += 1
        pubsub = self._conn.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(f"{self._conn.prefix}:live")
            while True:
                message = await pubsub.get_message(timeout=1.0)
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # swallowed by the client: see Connection.run
                    raise asyncio.CancelledError
                if message is None:
                    continue
                yield [TraceRecord(t, kind, step, ts, data) for t, kind, step, ts, data in _json.loads(message["data"])]
        finally:
            self._listeners -= 1
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def append(self, records: Sequence[TraceRecord]) -> None:
        by_trace: dict[str, list[TraceRecord]] = {}
        for r in records:
            by_trace.setdefault(r.trace_id, []).append(r)
        args: list[Any] = []
        ordered: list[TraceRecord] = []  # the records and their JSON, in the order written (for the live feed)
        lines: list[bytes] = []
        for trace_id, rs in by_trace.items():
            s = summarize(trace_id, rs)
            parts = [_json.dumps([r.kind, r.step, r.ts, r.data], "a trace record") for r in rs]
            size = sum(len(p) for p in parts)
            args += [trace_id, s.entry, _num(s.started_at), _num(s.last_at), s.records, s.errors, size, len(parts)]
            args += parts
            ordered += rs
            lines += parts
        if not args:
            return
        await self._conn.script("APPEND", *args)
        if await self._anyone_listens():
            live = (
                b"["
                + b",".join(b"[" + _json.dumps(r.trace_id) + b"," + p[1:] for r, p in zip(ordered, lines, strict=True))
                + b"]"
            )
            await self._conn.run(lambda: self._conn.client.publish(f"{self._conn.prefix}:live", live))

    async def trace(self, trace_id: str) -> list[TraceRecord]:
        rows = await self._conn.run(lambda: self._conn.client.lrange(f"{self._conn.prefix}:t:{trace_id}", 0, -1))
        out = []
        for row in rows:
            kind, step, ts, data = _json.loads(row)
            out.append(TraceRecord(trace_id, kind, step, ts, data))
        return out

    async def recent(self, limit: int = 50) -> list[TraceSummary]:
        p = self._conn.prefix
        client = self._conn.client

        async def read() -> list[TraceSummary]:
            ids = await client.zrevrange(f"{p}:tr", 0, limit - 1)
            async with client.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hmget(f"{p}:ts:{i.decode()}", ["entry", "first", "last", "records", "errors"])
                rows = await pipe.execute() if ids else []
            return [
                TraceSummary(i.decode(), entry.decode(), float(first), float(last), int(n), int(errors))
                for i, (entry, first, last, n, errors) in zip(ids, rows, strict=True)
                if entry is not None
            ]

        return await self._conn.run(read)

    async def size(self) -> int:
        raw = await self._conn.run(lambda: self._conn.client.get(f"{self._conn.prefix}:tbytes"))
        return int(raw or 0)

    async def prune(self, older_than: float, max_bytes: int | None = None) -> int:
        p = self._conn.prefix
        client = self._conn.client
        removed = 0
        while True:  # a batch at a time, so that no one script holds the server for long
            old = await self._conn.run(
                lambda: client.zrangebyscore(f"{p}:tl", "-inf", f"({_num(older_than)}", start=0, num=500)
            )
            if not old:
                break
            removed += int(await self._conn.script("DROP_TRACES", *old))
        if max_bytes is not None and await self.size() > max_bytes:
            target = int(max_bytes * 0.9)  # as the other stores do: room before the next prune
            while (excess := await self.size() - target) > 0:
                oldest = await self._conn.run(lambda: self._oldest(100))
                if not oldest:
                    break
                doomed, freed = [], 0
                for trace_id, size in oldest:  # the oldest, about as many as bring it under the cap
                    doomed.append(trace_id)
                    freed += size
                    if freed >= excess:
                        break
                removed += int(await self._conn.script("DROP_TRACES", *doomed))
        return removed

    async def _oldest(self, count: int) -> list[tuple[str, int]]:
        p = self._conn.prefix
        ids = await self._conn.client.zrange(f"{p}:tr", 0, count - 1)
        async with self._conn.client.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hget(f"{p}:ts:{i.decode()}", "bytes")
            sizes = await pipe.execute() if ids else []
        return [(i.decode(), int(size or 0)) for i, size in zip(ids, sizes, strict=True)]

    async def close(self) -> None:
        await self._conn.release()


class RedisStreamStore:
    """Stream items in a hash per group; each change takes the group's next number and goes into its change
    log (a sorted set by number, trimmed to the newest STREAM_LOG), in one script with the item."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn.acquire()
        self._origin = new_id()  # this process, in what it publishes: its listener skips its own

    async def set(self, stream: str, group: str, id: str, item: Any) -> StreamChange:
        raw = _json.dumps(item, f"stream item {stream}/{group}/{id}")
        seq, replaced = await self._conn.script("STREAM_SET", stream, group, id, raw, STREAM_LOG, self._origin)
        return StreamChange(stream, group, id, "update" if replaced else "create", _json.loads(raw), int(seq))

    async def delete(self, stream: str, group: str, id: str) -> StreamChange | None:
        seq = await self._conn.script("STREAM_DELETE", stream, group, id, STREAM_LOG, self._origin)
        return None if seq is None else StreamChange(stream, group, id, "delete", None, int(seq))

    async def get(self, stream: str, group: str, id: str) -> Any:
        key = f"{self._conn.prefix}:st:{len(stream)}:{stream}:{group}:i"
        raw = await self._conn.run(lambda: self._conn.client.hget(key, id))
        return None if raw is None else _json.loads(raw)

    async def snapshot(self, stream: str, group: str) -> tuple[dict[str, Any], int]:
        seq, *pairs = await self._conn.script("STREAM_SNAPSHOT", stream, group)
        items = {pairs[i].decode(): _json.loads(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return items, int(seq)

    async def changes(self, stream: str, group: str, since: int) -> list[StreamChange] | None:
        seq, *rows = await self._conn.script("STREAM_CHANGES", stream, group, since)
        if since > int(seq):
            return None  # a number this group has not reached: the store was reset since
        if since == int(seq):
            return []
        changes = []
        for row in rows:
            n, id, op, data = _json.loads(row)
            changes.append(StreamChange(stream, group, id, op, data, int(n)))
        if not changes or changes[0].seq > since + 1:
            return None  # some of the changes after `since` are gone from the log
        return changes

    async def groups(self, stream: str) -> list[tuple[str, int, int]]:
        base = f"{self._conn.prefix}:st:{len(stream)}:{stream}"
        client = self._conn.client

        async def read() -> list[tuple[str, int, int]]:
            names = sorted(g.decode() for g in await client.smembers(f"{base}:groups"))
            async with client.pipeline(transaction=False) as pipe:
                for group in names:
                    pipe.hlen(f"{base}:{group}:i")
                    pipe.get(f"{base}:{group}:q")
                got = await pipe.execute()
            return [(g, int(got[2 * i]), int(got[2 * i + 1] or 0)) for i, g in enumerate(names)]

        return await self._conn.run(read)

    async def send(self, event: StreamEvent) -> None:
        message = _json.dumps([self._origin, event.stream, event.group, None, event.id, "event", event.event])
        await self._conn.run(lambda: self._conn.client.publish(f"{self._conn.prefix}:st:bus", message))

    async def listen(self) -> AsyncIterator[list[StreamChange | StreamEvent]]:
        """Subscribes to P:st:bus; a lost connection is taken up again (what passed meanwhile shows as gaps)."""
        while True:
            pubsub = self._conn.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(f"{self._conn.prefix}:st:bus")
                yield []  # listening (again): what was published before this may have been missed
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # swallowed by the client: see Connection.run
                        raise asyncio.CancelledError
                    batch: list[StreamChange | StreamEvent] = []
                    while message is not None:
                        origin, stream, group, seq, id, op, data = _json.loads(message["data"])
                        if origin != self._origin:
                            if seq is None:
                                batch.append(StreamEvent(stream, group, id, data))
                            else:
                                batch.append(StreamChange(stream, group, id, op, None if op == "delete" else data, seq))
                        # What else has arrived goes in the same batch, up to a bound (a busy bus never ends)
                        message = await pubsub.get_message(timeout=0.0) if len(batch) < 1000 else None
                    if batch:
                        yield batch
            except (rexc.RedisError, OSError, StoreError) as exc:
                log.warning("listening for other processes' stream changes failed (%s); reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        await self._conn.release()


class RedisCronLock:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn.acquire()

    async def claim_tick(self, step: str, tick: float) -> bool:
        return bool(await self._conn.script("CLAIM_TICK", step, _num(tick)))

    async def last_tick(self, step: str) -> float | None:
        raw = await self._conn.run(lambda: self._conn.client.hget(f"{self._conn.prefix}:cron", step))
        return None if raw is None else float(raw)

    async def close(self) -> None:
        await self._conn.release()


_OPTIONS = {
    "prefix": "the name keys go under, {prefix}:..., so that several apps can share a server; default stepline",
    "volatile": "true to accept a server that can lose data (no AOF, or an evicting maxmemory-policy)",
    "timeout": "seconds an operation may take before it fails; default 5",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def open_url(url: StoreURL, options: StoreOptions) -> Adapters:
    """`redis://[:password@]host[:port][/db]` or `rediss://` for TLS, with the options above."""
    query = url.options(_OPTIONS)
    prefix = query.get("prefix", "stepline")
    if not prefix or any(c in prefix for c in "{}"):
        raise url.refuse(f"sets prefix={prefix!r}", "give a plain name, like prefix=shop")
    flag = query.get("volatile", "false").lower()
    if flag not in _TRUE | _FALSE:
        raise url.refuse(f"sets volatile={query['volatile']}", "write volatile=true or volatile=false")
    try:
        timeout = float(query.get("timeout", "5"))
    except ValueError:
        timeout = -1.0
    if not timeout > 0:  # also refuses nan
        raise url.refuse(f"sets timeout={query.get('timeout')}", "give it in seconds, like timeout=5")
    parts = urllib.parse.urlsplit(url.text)
    if not parts.hostname:
        raise url.refuse("names no host", "write redis://host:6379/0, like redis://127.0.0.1:6379/0")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise url.refuse(f"names database {db!r}", "a Redis database is a number: redis://host:6379/0")
    plain = urllib.parse.urlunsplit(parts._replace(query=""))  # the options above are ours, not redis-py's
    conn = Connection(plain, url.shown(), prefix, volatile=flag in _TRUE, timeout=timeout)
    health = options.health or Health()
    traces = RedisTraceStore(conn)
    return Adapters(
        RedisEventQueue(conn, options.clock, options.stale_after, health),
        RedisStateStore(conn),
        traces,
        RedisCronLock(conn),
        RedisStateStore(conn, namespace="c"),
        health,
        check=conn.verify,
        feed=traces,
        streams=RedisStreamStore(conn),
    )
