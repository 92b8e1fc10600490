"""Storage adapters. The engine depends only on the Protocols in `stepline._protocols`."""

from .._protocols import (
    DeadLetter,
    Delivery,
    Event,
    EventQueue,
    QueueStats,
    StateStore,
    TraceRecord,
    TraceStore,
    TraceSummary,
)

__all__ = [
    "DeadLetter",
    "Delivery",
    "Event",
    "EventQueue",
    "QueueStats",
    "StateStore",
    "TraceRecord",
    "TraceStore",
    "TraceSummary",
]
