"""In-memory adapters: the reference implementation of the Protocols, for tests and `--engine memory`.

Nothing here survives the process; the semantics (leases, retries, dead letters) are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _json
from .._ids import new_id
from .._protocols import DeadLetter, Delivery, Event, QueueStats, TraceRecord, TraceSummary


@dataclass(slots=True)
class _Entry:
    id: str
    event: Event
    step: str
    attempts: int = 0
    lease_until: float = 0.0


class MemoryEventQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ready: deque[_Entry] = deque()
        self._delayed: list[tuple[float, int, _Entry]] = []
        self._leased: dict[str, _Entry] = {}
        self._dead: dict[str, DeadLetter] = {}
        self._seq = 0
        self._wakeup = asyncio.Event()

    async def publish(self, event: Event, subscribers: Sequence[str], delay: float = 0.0) -> None:
        for step in subscribers:
            self._schedule(_Entry(new_id(), event, step), delay)
        self._wakeup.set()

    def _schedule(self, entry: _Entry, delay: float) -> None:
        if delay > 0:
            self._seq += 1
            heapq.heappush(self._delayed, (self._clock() + delay, self._seq, entry))
        else:
            self._ready.append(entry)

    def _promote(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            self._ready.append(heapq.heappop(self._delayed)[2])
        expired = [e for e in self._leased.values() if e.lease_until <= now]
        for entry in expired:
            del self._leased[entry.id]
            self._ready.append(entry)

    async def claim(self, leases: Mapping[str, float], limit: int) -> list[Delivery]:
        now = self._clock()
        self._promote(now)
        claimed: list[Delivery] = []
        skipped: list[_Entry] = []
        while self._ready and len(claimed) < limit:
            entry = self._ready.popleft()
            lease = leases.get(entry.step)
            if lease is None:
                skipped.append(entry)
                continue
            entry.attempts += 1
            entry.lease_until = now + lease
            self._leased[entry.id] = entry
            claimed.append(Delivery(entry.id, entry.event, entry.step, entry.attempts))
        self._ready.extendleft(reversed(skipped))
        return claimed

    def _release(self, delivery: Delivery) -> _Entry | None:
        return self._leased.pop(delivery.id, None)

    async def ack(self, delivery: Delivery) -> None:
        self._release(delivery)

    async def retry(self, delivery: Delivery, delay: float, error: str) -> None:
        entry = self._release(delivery)
        if entry is not None:
            self._schedule(entry, delay)
            self._wakeup.set()

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str | None) -> None:
        entry = self._release(delivery)
        if entry is not None:
            self._dead[entry.id] = DeadLetter(
                entry.id, entry.event, entry.step, entry.attempts, error, traceback, time.time()
            )

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead.values())

    async def replay(self, delivery_id: str) -> bool:
        dead = self._dead.pop(delivery_id, None)
        if dead is None:
            return False
        self._schedule(_Entry(dead.delivery_id, dead.event, dead.step), 0)
        self._wakeup.set()
        return True

    async def stats(self) -> QueueStats:
        return QueueStats(len(self._ready), len(self._delayed), len(self._leased), len(self._dead))

    async def wait(self, timeout: float) -> None:
        if self._delayed:
            timeout = min(timeout, max(0.0, self._delayed[0][0] - self._clock()))
        if self._leased:
            soonest = min(e.lease_until for e in self._leased.values())
            timeout = min(timeout, max(0.0, soonest - self._clock()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
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

    async def close(self) -> None:
        pass


def summarize(trace_id: str, records: Sequence[TraceRecord]) -> TraceSummary:
    """One line for a trace: where it started, how long it has run, how many failures it saw."""
    first = records[0]
    entry = str(first.data.get("entry", first.step or "?"))
    errors = sum(1 for r in records if r.kind == "end" and r.data.get("status") == "error")
    return TraceSummary(trace_id, entry, first.ts, records[-1].ts, len(records), errors)
