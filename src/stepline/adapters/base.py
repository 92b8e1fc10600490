"""The seams between the engine and storage: the records that cross them and the Protocols adapters implement.

The engine imports only this module; adapters (memory, sqlite, redis, ...) implement it and are
checked by the same conformance suite (tests/conformance/).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from stepline._health import Health


@dataclass(frozen=True, slots=True)
class Event:
    """An accepted emit. Immutable: every subscriber gets its own `Delivery` of the same event."""

    id: str
    topic: str
    data: Any
    trace_id: str
    emitted_by: str | None
    created_at: float
    message_group_id: str | None = None


@dataclass(slots=True)
class Delivery:
    """One event on its way to one subscribing step. `attempt` counts from 1 and includes this one.

    The pair (id, attempt) names one lease: an ack, retry, renewal or dead-letter for an older attempt
    (whose lease ran out and whose delivery was handed to someone else) changes nothing.

    `lost` says the attempt before this one never finished: its lease ran out, or its worker died, before
    an ack, retry or dead-letter. A lost attempt counts as an attempt."""

    id: str
    event: Event
    step: str
    attempt: int
    lost: bool = False


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """How a step takes deliveries: its lease, whether order within a message group is kept, its cap."""

    lease: float
    fifo: bool = False
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery_id: str
    event: Event
    step: str
    attempts: int
    error: str
    traceback: str | None
    failed_at: float

    def to_dict(self) -> dict[str, Any]:
        """As the CLI's --json and the Workbench API show it."""
        return {
            "id": self.delivery_id,
            "step": self.step,
            "topic": self.event.topic,
            "traceId": self.event.trace_id,
            "attempts": self.attempts,
            "error": self.error,
            "traceback": self.traceback,
            "failedAt": self.failed_at,
            "data": self.event.data,
            "messageGroupId": self.event.message_group_id,
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    ready: int
    delayed: int  # waiting for their delay (a retry's backoff, a delayed emit), due within the horizon asked for
    in_flight: int
    dead: int
    later: int = 0  # delayed past the horizon asked for (none without one)

    @property
    def pending(self) -> int:
        return self.ready + self.delayed + self.in_flight


class EventQueue(Protocol):
    """Durable at-least-once delivery of events to subscribing steps.

    FIFO: for a step claimed with `fifo=True`, a delivery is handed out only when no earlier delivery
    of the same step and message group (None is a group of its own) is still in the queue: waiting,
    delayed for a retry, or leased.
    """

    async def publish(
        self,
        event: Event,
        subscribers: Mapping[str, float],
        idempotency_key: str | None = None,
        idempotency_window: float = 86400.0,
    ) -> bool:
        """Accept the event: once this returns True, each subscriber (step -> delay in seconds) will get
        a delivery, not before its delay.

        False when `idempotency_key` was accepted before, within `idempotency_window` seconds: the
        event is a repeat and nothing is queued."""

    async def claim(self, specs: Mapping[str, ClaimSpec], limit: int) -> list[Delivery]:
        """Lease up to `limit` ready deliveries of the named steps. A delivery whose lease ran out is ready
        again: it is handed out with the next attempt number and `lost=True`."""

    async def renew(self, leases: Sequence[tuple[Delivery, float]]) -> list[Delivery]:
        """Extend each (delivery, seconds) lease to `seconds` from now; return the deliveries whose lease was
        no longer held (it ran out and the delivery went to someone else, or it was settled)."""

    async def ack(self, delivery: Delivery) -> None:
        """The delivery is done; it is never handed out again."""

    async def retry(self, delivery: Delivery, delay: float, error: str, *, counts: bool = True) -> None:
        """Release the delivery to run again after `delay` seconds. With `counts=False` the attempt is given
        back (the next claim has the same attempt number): for a run the store failed, not the handler."""

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str | None) -> None:
        """Move the delivery out of the queue into the dead letters."""

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """Oldest first."""

    async def replay(self, delivery_id: str) -> bool:
        """Put a dead letter back in the queue with a fresh attempt count; False if there is none."""

    async def purge(self, delivery_ids: Sequence[str] | None = None) -> int:
        """Delete the named dead letters (all of them for None); returns how many."""

    async def stats(self, horizon: float | None = None) -> QueueStats:
        """Counts of the queue. With `horizon` (seconds), delayed deliveries due later than that count as `later`."""

    async def wait(self, timeout: float) -> None:
        """Return when new work may be ready, or after `timeout` seconds, whichever is first."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Increment:
    """Add `by` to a number (a missing key counts as 0)."""

    by: int | float = 1


@dataclass(frozen=True, slots=True)
class Merge:
    """Shallow-merge `fields` into a dict (a missing key counts as {})."""

    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CompareAndSet:
    """Set `new` only if the current value equals `expected` (None: the key is missing)."""

    expected: Any
    new: Any


StateUpdate = Increment | Merge | CompareAndSet


@dataclass(frozen=True, slots=True)
class UpdateResult:
    applied: bool
    value: Any


class StateStore(Protocol):
    """JSON values by (group, key). Adapters raise NotJSONError for a value that is not JSON."""

    async def get(self, group: str, key: str) -> Any: ...

    async def set(self, group: str, key: str, value: Any) -> None: ...

    async def update(self, group: str, key: str, op: StateUpdate) -> UpdateResult:
        """Apply `op` atomically, even against other processes. Raises StateUpdateError when the
        current value does not fit the operation (incrementing a string, merging into a list)."""

    async def delete(self, group: str, key: str) -> bool:
        """True if the key existed."""

    async def get_group(self, group: str) -> dict[str, Any]: ...

    async def clear(self, group: str) -> int:
        """The number of keys removed."""

    async def groups(self) -> list[str]: ...

    async def close(self) -> None: ...


TraceKind = Literal["trigger", "start", "end", "emit", "state", "log", "retry", "dead_letter", "llm", "tool", "code"]


@dataclass(slots=True)
class TraceRecord:
    trace_id: str
    kind: TraceKind
    step: str | None
    ts: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    entry: str
    started_at: float
    last_at: float
    records: int
    errors: int


class TraceStore(Protocol):
    async def append(self, records: Sequence[TraceRecord]) -> None: ...

    async def trace(self, trace_id: str) -> list[TraceRecord]: ...

    async def recent(self, limit: int = 50) -> list[TraceSummary]:
        """Newest first."""

    async def prune(self, older_than: float, max_bytes: int | None = None) -> int:
        """Delete traces whose last record is older than `older_than` (a Unix time), then, while the stored
        traces take more than `max_bytes`, the oldest traces; returns how many traces went."""

    async def size(self) -> int:
        """About how many bytes the stored traces take. A store whose traces share a file with the rest of
        its data (SQLite) counts the file's bytes in use: the cap then bounds the file, and traces give way."""

    async def close(self) -> None: ...


class CronLock(Protocol):
    """Makes a cron tick fire once, however many workers see it."""

    async def claim_tick(self, step: str, tick: float) -> bool:
        """True for exactly one caller per (step, tick)."""

    async def last_tick(self, step: str) -> float | None:
        """The newest tick claimed for `step`, if any."""

    async def close(self) -> None: ...


@dataclass
class Adapters:
    """The storage an engine runs on: one implementation of each Protocol, usually sharing one backend."""

    queue: EventQueue
    state: StateStore
    traces: TraceStore
    cron: CronLock
    health: Health | None = None  # where the store reports its failing background work, if it has any

    async def close(self) -> None:
        for part in (self.queue, self.state, self.traces, self.cron):
            await part.close()


def summarize(trace_id: str, records: Sequence[TraceRecord]) -> TraceSummary:
    """One line for a trace: where it started, how long it has run, how many failures it saw."""
    first = records[0]
    entry = str(first.data.get("entry", first.step or "?"))
    errors = sum(1 for r in records if is_failure(r))
    return TraceSummary(trace_id, entry, first.ts, max(r.ts for r in records), len(records), errors)


def is_failure(record: TraceRecord) -> bool:
    return record.kind == "end" and record.data.get("status") == "error"
