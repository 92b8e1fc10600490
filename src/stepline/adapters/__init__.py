"""Storage adapters. The engine depends only on the Protocols in `stepline.adapters.base`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from stepline._health import Health
from stepline.adapters.base import (
    Adapters,
    ClaimSpec,
    CronLock,
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

EngineName = Literal["sqlite", "memory"]
DEFAULT_DATABASE = Path(".stepline") / "stepline.db"


def open_adapters(
    engine: EngineName,
    root: Path,
    *,
    database: Path | None = None,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    health: Health | None = None,
) -> Adapters:
    """The adapters of an engine by name; `database` defaults to `.stepline/stepline.db` under `root`.

    `health` hears of the store's failing background work (SQLite's heartbeat)."""
    if engine == "memory":
        from stepline.adapters.memory import MemoryCronLock, MemoryEventQueue, MemoryStateStore, MemoryTraceStore

        return Adapters(MemoryEventQueue(), MemoryStateStore(), MemoryTraceStore(), MemoryCronLock())
    if engine == "sqlite":
        from stepline.adapters.sqlite import open_sqlite

        return open_sqlite(database or root / DEFAULT_DATABASE, synchronous=synchronous, health=health)
    raise ValueError(f"unknown engine {engine!r}; use sqlite or memory")


__all__ = [
    "DEFAULT_DATABASE",
    "Adapters",
    "ClaimSpec",
    "CronLock",
    "DeadLetter",
    "Delivery",
    "EngineName",
    "Event",
    "EventQueue",
    "QueueStats",
    "StateStore",
    "TraceRecord",
    "TraceStore",
    "TraceSummary",
    "open_adapters",
]
