"""In-memory adapters: the reference implementation of the Protocols, for tests and `--store memory://`.

Nothing here survives the process; the semantics (leases, FIFO groups, retries, dead letters,
idempotency keys) are the real ones, checked by the same conformance suite as the durable adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stepline import _json
from stepline._clock import SYSTEM_CLOCK, Clock, sleep_until_set
from stepline._errors import StoreError
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


@dataclass(slots=True)
class _Entry:
    seq: int
    id: str
    event: Event
    step: str
    attempts: int = 0
    visible_at: float = 0.0
    leased: bool = False
    lost: bool = False
    resumed: bool = False
    suspended: bool = False
    woken: bool = False

    @property
    def group(self) -> tuple[str, str | None]:
        return (self.step, self.event.message_group_id)


class MemoryEventQueue:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock.time
        self._sleep_on = clock
        self._seq = itertools.count()
        self._entries: dict[str, _Entry] = {}  # every delivery still in the queue, in publish order
        self._timers: list[tuple[float, int, str]] = []  # (visible_at, seq, id): delayed or leased
        self._groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)  # pending seqs, ascending
        self._dead: dict[str, DeadLetter] = {}
        self._seen_keys: dict[str, float] = {}
        self._wakeup = asyncio.Event()

    async def publish(
        self,
        event: Event,
        subscribers: Mapping[str, float],
        idempotency_key: str | None = None,
        idempotency_window: float = 86400.0,
    ) -> bool:
        now = self._clock()
        if idempotency_key is not None:
            if self._seen_keys.get(idempotency_key, -1.0) > now:
                return False
            self._seen_keys[idempotency_key] = now + idempotency_window
        for step, delay in subscribers.items():
            entry = _Entry(next(self._seq), new_id(), event, step, visible_at=now + delay)
            self._entries[entry.id] = entry
            self._groups[entry.group].append(entry.seq)
            if delay > 0:
                heapq.heappush(self._timers, (entry.visible_at, entry.seq, entry.id))
        self._wakeup.set()
        return True

    async def claim(self, specs: Mapping[str, ClaimSpec], limit: int) -> list[Delivery]:
        now = self._clock()
        busy: dict[str, int] = defaultdict(int)
        for entry in self._entries.values():
            if entry.leased and entry.visible_at > now:
                busy[entry.step] += 1
        claimed: list[Delivery] = []
        for entry in self._entries.values():
            if len(claimed) >= limit:
                break
            spec = specs.get(entry.step)
            if spec is None or entry.visible_at > now:
                continue
            if spec.fifo and self._groups[entry.group][0] != entry.seq:
                continue
            if spec.concurrency is not None and busy[entry.step] >= spec.concurrency:
                continue
            busy[entry.step] += 1
            entry.attempts += 1
            entry.lost = entry.lost or entry.leased  # still leased here: the lease ran out, the attempt was lost
            entry.leased = True
            entry.suspended = entry.woken = False
            entry.visible_at = now + spec.lease
            heapq.heappush(self._timers, (entry.visible_at, entry.seq, entry.id))
            claimed.append(Delivery(entry.id, entry.event, entry.step, entry.attempts, entry.lost, entry.resumed))
        return claimed

    async def renew(self, leases: Sequence[tuple[Delivery, float]]) -> list[Delivery]:
        now = self._clock()
        lost = []
        for delivery, seconds in leases:
            entry = self._release(delivery)
            if entry is None:
                lost.append(delivery)
                continue
            entry.visible_at = now + seconds
            heapq.heappush(self._timers, (entry.visible_at, entry.seq, entry.id))
        return lost

    def _release(self, delivery: Delivery) -> _Entry | None:
        """The entry, if this delivery still holds its lease (a stale attempt gets None)."""
        entry = self._entries.get(delivery.id)
        if entry is None or not entry.leased or entry.attempts != delivery.attempt:
            return None
        return entry

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry.id]
        seqs = self._groups[entry.group]
        seqs.remove(entry.seq)
        if not seqs:
            del self._groups[entry.group]
        self._wakeup.set()  # the next message of its FIFO group may now go

    async def ack(self, delivery: Delivery) -> None:
        entry = self._release(delivery)
        if entry is not None:
            self._remove(entry)

    async def retry(self, delivery: Delivery, delay: float, error: str, *, counts: bool = True) -> None:
        entry = self._release(delivery)
        if entry is not None:
            entry.leased = False
            entry.lost = False
            if not counts:
                entry.attempts -= 1
                entry.resumed = True
            entry.visible_at = self._clock() + delay
            heapq.heappush(self._timers, (entry.visible_at, entry.seq, entry.id))
            self._wakeup.set()

    async def suspend(self, delivery: Delivery, until: float | None) -> None:
        entry = self._release(delivery)
        if entry is None:
            return
        entry.leased = entry.lost = False
        entry.attempts -= 1
        entry.resumed = True
        if entry.woken:
            entry.visible_at = self._clock()
            entry.woken = False
        else:
            entry.suspended = True
            entry.visible_at = FOREVER if until is None else until
            heapq.heappush(self._timers, (entry.visible_at, entry.seq, entry.id))
        self._wakeup.set()

    async def wake(self, delivery_id: str) -> bool:
        entry = self._entries.get(delivery_id)
        if entry is None:
            return False
        if entry.leased:
            entry.woken = True
        elif entry.suspended:
            entry.suspended = False
            entry.visible_at = min(entry.visible_at, self._clock())
            self._wakeup.set()
        return True

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str | None) -> None:
        entry = self._release(delivery)
        if entry is not None:
            self._remove(entry)
            self._dead[entry.id] = DeadLetter(
                entry.id, entry.event, entry.step, entry.attempts, error, traceback, self._clock()
            )

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        return list(self._dead.values())[:limit]

    async def replay(self, delivery_id: str) -> bool:
        dead = self._dead.pop(delivery_id, None)
        if dead is None:
            return False
        entry = _Entry(next(self._seq), dead.delivery_id, dead.event, dead.step, visible_at=self._clock())
        self._entries[entry.id] = entry
        self._groups[entry.group].append(entry.seq)
        self._wakeup.set()
        return True

    async def purge(self, delivery_ids: Sequence[str] | None = None) -> int:
        if delivery_ids is None:
            count = len(self._dead)
            self._dead.clear()
            return count
        return sum(self._dead.pop(i, None) is not None for i in delivery_ids)

    async def stats(self, horizon: float | None = None) -> QueueStats:
        now = self._clock()
        until = now + horizon if horizon is not None else float("inf")
        ready = delayed = in_flight = later = 0
        for entry in self._entries.values():
            if entry.visible_at <= now:
                ready += 1
            elif entry.leased:
                in_flight += 1
            elif entry.visible_at <= until:
                delayed += 1
            else:
                later += 1
        return QueueStats(ready, delayed, in_flight, len(self._dead), later)

    async def backlog(self, step: str) -> int:
        return sum(1 for entry in self._entries.values() if entry.step == step and not entry.suspended)

    async def wait(self, timeout: float) -> None:
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            heapq.heappop(self._timers)
        # Until news, the next delayed delivery (on the store's clock, which a test may move) or `timeout`.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if self._timers:
                    await sleep_until_set(self._sleep_on, max(0.0, self._timers[0][0] - now), self._wakeup)
                else:
                    await self._wakeup.wait()
        self._wakeup.clear()

    async def close(self) -> None:
        pass


class MemoryStateStore:
    def __init__(self) -> None:
        self._groups: dict[str, dict[str, bytes]] = {}

    async def get(self, group: str, key: str) -> Any:
        raw = self._groups.get(group, {}).get(key)
        return None if raw is None else _json.loads(raw)

    async def set(self, group: str, key: str, value: Any) -> None:
        self._groups.setdefault(group, {})[key] = _json.dumps(value, f"state value {group}/{key}")

    async def update(self, group: str, key: str, op: StateUpdate) -> UpdateResult:
        result = _updates.apply(await self.get(group, key), op, f"state {group}/{key}")
        if result.applied:
            await self.set(group, key, result.value)
        return result

    async def delete(self, group: str, key: str) -> bool:
        values = self._groups.get(group)
        if values is None or key not in values:
            return False
        del values[key]
        if not values:
            del self._groups[group]
        return True

    async def get_group(self, group: str) -> dict[str, Any]:
        return {k: _json.loads(v) for k, v in self._groups.get(group, {}).items()}

    async def clear(self, group: str) -> int:
        return len(self._groups.pop(group, {}))

    async def groups(self) -> list[str]:
        return sorted(self._groups)

    async def close(self) -> None:
        pass


class MemoryTraceStore:
    """Keeps the newest `max_traces` traces; older ones are dropped whole."""

    def __init__(self, max_traces: int = 1000) -> None:
        self._max = max_traces
        self._traces: OrderedDict[str, list[TraceRecord]] = OrderedDict()

    async def append(self, records: Sequence[TraceRecord]) -> None:
        for record in records:
            trace = self._traces.get(record.trace_id)
            if trace is None:
                trace = self._traces[record.trace_id] = []
                if len(self._traces) > self._max:
                    self._traces.popitem(last=False)
            trace.append(record)

    async def trace(self, trace_id: str) -> list[TraceRecord]:
        return list(self._traces.get(trace_id, []))

    async def recent(self, limit: int = 50) -> list[TraceSummary]:
        out: list[TraceSummary] = []
        for trace_id in reversed(self._traces):
            out.append(summarize(trace_id, self._traces[trace_id]))
            if len(out) >= limit:
                break
        return out

    async def prune(self, older_than: float, max_bytes: int | None = None) -> int:
        old = [t for t, records in self._traces.items() if records[-1].ts < older_than]
        for trace_id in old:
            del self._traces[trace_id]
        removed = len(old)
        if max_bytes is not None and await self.size() > max_bytes:
            sizes = {t: _size(records) for t, records in self._traces.items()}
            total = sum(sizes.values())
            target = int(max_bytes * 0.9)  # as SQLite does: room before the next prune
            for trace_id in list(self._traces):  # oldest first
                if total <= target:
                    break
                total -= sizes[trace_id]
                del self._traces[trace_id]
                removed += 1
        return removed

    async def size(self) -> int:
        return sum(_size(records) for records in self._traces.values())

    async def close(self) -> None:
        pass


def _size(records: list[TraceRecord]) -> int:
    return len(_json.dumps([[r.kind, r.step, r.ts, r.data] for r in records]))


class MemoryCronLock:
    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    async def claim_tick(self, step: str, tick: float) -> bool:
        if self._last.get(step, float("-inf")) >= tick:
            return False
        self._last[step] = tick
        return True

    async def last_tick(self, step: str) -> float | None:
        return self._last.get(step)

    async def close(self) -> None:
        pass


@dataclass
class _StreamGroup:
    items: dict[str, bytes]
    seq: int = 0
    log: deque[StreamChange] | None = None


class MemoryStreamStore:
    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], _StreamGroup] = {}

    def _group(self, stream: str, group: str) -> _StreamGroup:
        found = self._groups.get((stream, group))
        if found is None:
            found = self._groups[(stream, group)] = _StreamGroup({}, 0, deque(maxlen=STREAM_LOG))
        return found

    def _change(self, g: _StreamGroup, change: StreamChange) -> StreamChange:
        assert g.log is not None
        g.log.append(change)
        return change

    async def set(self, stream: str, group: str, id: str, item: Any) -> StreamChange:
        raw = _json.dumps(item, f"stream item {stream}/{group}/{id}")
        g = self._group(stream, group)
        op: Literal["create", "update"] = "update" if id in g.items else "create"
        g.items[id] = raw
        g.seq += 1
        return self._change(g, StreamChange(stream, group, id, op, _json.loads(raw), g.seq))

    async def delete(self, stream: str, group: str, id: str) -> StreamChange | None:
        g = self._groups.get((stream, group))
        if g is None or id not in g.items:
            return None
        del g.items[id]
        g.seq += 1
        return self._change(g, StreamChange(stream, group, id, "delete", None, g.seq))

    async def get(self, stream: str, group: str, id: str) -> Any:
        g = self._groups.get((stream, group))
        raw = g.items.get(id) if g is not None else None
        return None if raw is None else _json.loads(raw)

    async def snapshot(self, stream: str, group: str) -> tuple[dict[str, Any], int]:
        g = self._groups.get((stream, group))
        if g is None:
            return {}, 0
        return {k: _json.loads(v) for k, v in g.items.items()}, g.seq

    async def changes(self, stream: str, group: str, since: int) -> list[StreamChange] | None:
        g = self._groups.get((stream, group))
        seq = g.seq if g is not None else 0
        if since > seq:
            return None  # a number this group has not reached: the store was reset since
        if since == seq:
            return []
        log = list(g.log or []) if g is not None else []
        if not log or log[0].seq > since + 1:
            return None  # some of the changes after `since` are gone from the log
        return [c for c in log if c.seq > since]

    async def groups(self, stream: str) -> list[tuple[str, int, int]]:
        return sorted((group, len(g.items), g.seq) for (s, group), g in self._groups.items() if s == stream)

    async def send(self, event: StreamEvent) -> None:
        """No other process shares a memory store: there is no one to hand the event to."""

    async def listen(self) -> AsyncIterator[list[StreamChange | StreamEvent]]:
        yield []  # listening from now on
        await asyncio.get_running_loop().create_future()  # nothing else writes here: wait until closed

    async def close(self) -> None:
        pass


def open_url(url: StoreURL, options: StoreOptions) -> Adapters:
    """`memory://`: the adapters in this process, empty."""
    if url.netloc or url.path.strip("/"):
        raise url.refuse("has a location, but a memory store lives in the process", "write memory://")
    url.options({})
    if options.must_exist:  # a command reading what a server left has nothing to read here
        raise StoreError(
            "a memory store lives inside the process that runs it; another command cannot read it",
            fix="run the project on a store that outlives it (the default one, in a file) to inspect it from here",
        )
    return Adapters(
        MemoryEventQueue(clock=options.clock),
        MemoryStateStore(),
        MemoryTraceStore(),
        MemoryCronLock(),
        MemoryStateStore(),  # control: Stepline's own records, apart from the user's state
        per_process=True,
        streams=MemoryStreamStore(),
    )
