"""The seam between the runtime and its store: the records that cross it, the Protocols a store implements,
and what a store is opened with (its parsed URL and options).

The runtime reaches storage only through this module; each store (memory, sqlite, ...) implements it and
passes the same conformance suite (tests/conformance/).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from stepline._clock import SYSTEM_CLOCK, Clock
from stepline._errors import StoreURLError
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
    an ack, retry or dead-letter. A lost attempt counts as an attempt.

    `resumed` says the run was suspended (ctx.sleep, ctx.wait_for) or given back (a store failure) before:
    it may have recorded steps in its journal. A first attempt that is not resumed has none to read."""

    id: str
    event: Event
    step: str
    attempt: int
    lost: bool = False
    resumed: bool = False


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

    async def suspend(self, delivery: Delivery, until: float | None) -> None:
        """A run that waits (ctx.sleep, ctx.wait_for) lets go of its lease: its attempt is given back, and it
        is handed out again (with `resumed=True`) at `until`, a time on the store's clock (None: only when
        woken), or at once if `wake` was called for it while it still held the lease."""

    async def wake(self, delivery_id: str) -> bool:
        """A suspended run may go on: it is ready at once. One that still holds its lease is marked, so that
        its next `suspend` hands it out again at once (a wake is never lost to a run about to suspend).
        False when no such delivery is in the queue."""

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """Oldest first."""

    async def replay(self, delivery_id: str) -> bool:
        """Put a dead letter back in the queue with a fresh attempt count; False if there is none."""

    async def purge(self, delivery_ids: Sequence[str] | None = None) -> int:
        """Delete the named dead letters (all of them for None); returns how many."""

    async def stats(self, horizon: float | None = None) -> QueueStats:
        """Counts of the queue. With `horizon` (seconds), delayed deliveries due later than that count as `later`."""

    async def backlog(self, step: str) -> int:
        """How many deliveries of `step` are in the queue: waiting, delayed or leased (not the dead letters, and
        not suspended runs: they wait for a time or an event, not for a worker)."""

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


TraceKind = Literal[
    "trigger", "start", "end", "emit", "state", "log", "retry", "dead_letter", "llm", "tool", "code", "run"
]


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


class RecordFeed(Protocol):
    """Trace records as every process sharing the store writes them: what a live view (the Workbench's)
    shows of a whole cluster. A store whose processes cannot see each other's writes has none."""

    def listen(self) -> AsyncIterator[list[TraceRecord]]:
        """The batches written from now on, by any process (this one's too), until the iterator is closed."""
        ...


@dataclass(frozen=True, slots=True)
class StreamChange:
    """One change of a stream group: an item created, updated or deleted, and the group's sequence number
    after it. The number is assigned in the same write as the item, so that a reader who took a snapshot at
    `seq` V and then applies the changes after V misses none and applies none twice."""

    stream: str
    group: str
    id: str
    op: Literal["create", "update", "delete"]
    data: Any  # the item after the change; None for a delete
    seq: int


class StreamStore(Protocol):
    """Stream items by (stream, group, id), JSON, each change numbered per group and kept in a change log of
    the most recent `STREAM_LOG` changes of the group, for subscribers catching up after a reconnect."""

    async def set(self, stream: str, group: str, id: str, item: Any) -> StreamChange:
        """Create or replace an item; the change says which."""

    async def delete(self, stream: str, group: str, id: str) -> StreamChange | None:
        """None when there was no such item (nothing changed, no number taken)."""

    async def get(self, stream: str, group: str, id: str) -> Any: ...

    async def snapshot(self, stream: str, group: str) -> tuple[dict[str, Any], int]:
        """Every item of the group, and the sequence number they are as of (0 for a group never written)."""

    async def changes(self, stream: str, group: str, since: int) -> list[StreamChange] | None:
        """The changes after `since`, oldest first; None when some of them are no longer in the log, or
        when `since` is past the group's number (the store was reset): the reader then takes a snapshot."""

    async def groups(self, stream: str) -> list[tuple[str, int, int]]:
        """(group, items, seq) of every group of the stream ever written, by group name."""

    async def send(self, event: StreamEvent) -> None:
        """Hand an ephemeral event to the other processes sharing the store (it is not kept)."""

    def listen(self) -> AsyncIterator[list[StreamChange | StreamEvent]]:
        """The changes and events the other processes sharing the store make from now on, in batches, until
        the iterator is closed. The first batch is empty, once listening; another empty batch says it
        listens again after losing touch, and may have missed some. Best effort: a change it misses shows
        as a gap in its group's numbers, which the reader fills from `changes`; an event it misses is gone
        (events are not kept)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An ephemeral event for the watchers of a group (or of one item of it, `id`): sent, never stored."""

    stream: str
    group: str
    id: str | None
    event: Any  # {"type": ..., "data": ...}


# How many changes of each stream group are kept for catching up (per group, the newest).
STREAM_LOG = 1000


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
    # Stepline's own records (stop marks, approvals, conversations), kept apart from user state so they
    # neither show among user groups nor collide with them.
    control: StateStore
    health: Health | None = None  # where the store reports its failing background work, if it has any
    url: str = ""  # the store's URL as it may be shown (a password masked)
    per_process: bool = False  # its data lives in this process alone (memory://): workers cannot share it
    clock: Clock = SYSTEM_CLOCK  # what its delays, leases and windows are measured by: the engine's too
    # Checks that the store can keep what it is given (a Redis without an append-only file cannot); raises
    # StoreError. A store with nothing to check has none.
    check: Callable[[], Awaitable[None]] | None = None
    feed: RecordFeed | None = None  # every process's trace records, live; None: this process's alone
    streams: StreamStore | None = None  # stream items for live clients (docs/streams.md, to come)

    async def verify(self) -> None:
        """Refuse a store that would lose accepted events (StoreError, with the setting to change), before
        anything runs on it; StoreUnavailableError when it cannot be reached to tell."""
        if self.check is not None:
            await self.check()

    async def close(self) -> None:
        for part in (self.queue, self.state, self.traces, self.cron, self.control):
            await part.close()
        if self.streams is not None:
            await self.streams.close()


def summarize(trace_id: str, records: Sequence[TraceRecord]) -> TraceSummary:
    """One line for a trace: where it started, how long it has run, how many failures it saw."""
    first = records[0]
    entry = str(first.data.get("entry", first.step or "?"))
    errors = sum(1 for r in records if is_failure(r))
    return TraceSummary(trace_id, entry, first.ts, max(r.ts for r in records), len(records), errors)


def is_failure(record: TraceRecord) -> bool:
    return record.kind == "end" and record.data.get("status") == "error"


# The `until` of a run suspended with no time to wake at (a wait_for without a timeout): the year 9999.
FOREVER = 253402300799.0


# -- opening a store ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: `scheme://netloc/path?query`, with the query as single-valued options."""

    text: str
    scheme: str
    netloc: str
    path: str  # percent-decoded
    query: dict[str, str]

    def shown(self) -> str:
        """The URL to print: a password in it is masked."""
        parts = urllib.parse.urlsplit(self.text)
        if parts.password is None:
            return self.text
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def refuse(self, message: str, fix: str) -> StoreURLError:
        return StoreURLError(f"the store URL {self.shown()!r} {message}", fix=fix)

    def options(self, accepted: dict[str, str]) -> dict[str, str]:
        """The query options, refusing any this store does not know; `accepted` maps each to its help."""
        unknown = sorted(set(self.query) - set(accepted))
        if unknown:
            listed = "; ".join(f"{name} ({text})" for name, text in accepted.items())
            fix = f"the options it takes: {listed}" if accepted else "it takes none; remove them"
            raise self.refuse(f"has options a {self.scheme} store does not take ({', '.join(unknown)})", fix)
        return self.query


@dataclass(frozen=True)
class StoreOptions:
    """What a store is opened with besides its URL."""

    root: Path = field(default_factory=Path.cwd)  # relative paths in a URL are relative to the project root
    clock: Clock = SYSTEM_CLOCK  # what "now" is for leases, delays and idempotency windows
    health: Health | None = None  # hears of the store's failing background work
    must_exist: bool = False  # a command that only reads (stepline dlq) must not create an empty store
    # A worker silent this long is taken for dead, and its leases are handed out again: longer than any
    # pause of a live worker (a GC, a busy disk), short enough that a crash costs seconds, not minutes.
    stale_after: float = 5.0
