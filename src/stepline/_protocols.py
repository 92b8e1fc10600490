"""The seams between the engine and storage: the records that cross them and the Protocols adapters implement.

The engine imports only this module; adapters (memory, sqlite, redis, ...) implement it and are
checked by the same conformance suite (tests/conformance/).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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
    """One event on its way to one subscribing step. `attempt` counts from 1 and includes this one."""

    id: str
    event: Event
    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery_id: str
    event: Event
    step: str
    attempts: int
    error: str
    traceback: str | None
    failed_at: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    ready: int
    delayed: int
    in_flight: int
    dead: int

    @property
    def pending(self) -> int:
        return self.ready + self.delayed + self.in_flight


class EventQueue(Protocol):
    """Durable at-least-once delivery of events to subscribing steps."""

    async def publish(self, event: Event, subscribers: Sequence[str], delay: float = 0.0) -> None:
        """Accept the event: once this returns, each subscriber will get a delivery."""

    async def claim(self, leases: Mapping[str, float], limit: int) -> list[Delivery]:
        """Lease up to `limit` ready deliveries of the named steps, each for its lease (seconds)."""

    async def ack(self, delivery: Delivery) -> None:
        """The delivery is done; it is never handed out again."""

    async def retry(self, delivery: Delivery, delay: float, error: str) -> None:
        """Release the delivery to run again after `delay` seconds."""

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str | None) -> None:
        """Move the delivery out of the queue into the dead-letter list."""

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def replay(self, delivery_id: str) -> bool:
        """Put a dead letter back in the queue with a fresh attempt count; False if there is none."""

    async def stats(self) -> QueueStats: ...

    async def wait(self, timeout: float) -> None:
        """Return when new work may be ready, or after `timeout` seconds, whichever is first."""

    async def close(self) -> None: ...


class StateStore(Protocol):
    """JSON values by (group, key). Adapters raise NotJSONError for a value that is not JSON."""

    async def get(self, group: str, key: str) -> Any: ...

    async def set(self, group: str, key: str, value: Any) -> None: ...

    async def delete(self, group: str, key: str) -> bool:
        """True if the key existed."""

    async def get_group(self, group: str) -> dict[str, Any]: ...

    async def clear(self, group: str) -> int:
        """The number of keys removed."""

    async def groups(self) -> list[str]: ...

    async def close(self) -> None: ...


TraceKind = Literal["trigger", "start", "end", "emit", "state", "log", "retry", "dead_letter"]


@dataclass(frozen=True, slots=True)
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

    async def recent(self, limit: int = 50) -> list[TraceSummary]: ...

    async def close(self) -> None: ...
