"""One suite, every adapter: each test here runs against every engine listed in ENGINES."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stepline.adapters import EngineName
from stepline.adapters.base import CronLock, EventQueue, StateStore, TraceStore
from stepline.adapters.memory import MemoryCronLock, MemoryEventQueue, MemoryStateStore, MemoryTraceStore
from stepline.adapters.sqlite import open_sqlite


class FakeClock:
    """Time that moves only when a test says so, for leases and delays without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Adapters:
    queue: EventQueue
    state: StateStore
    traces: TraceStore
    cron: CronLock
    clock: FakeClock


ENGINES: list[EngineName] = ["memory", "sqlite"]
# Engines whose storage several processes share.
SHARED_ENGINES: list[EngineName] = ["sqlite"]


async def open_adapters(engine: str, tmp_path: Path, clock: FakeClock) -> Adapters:
    if engine == "memory":
        return Adapters(MemoryEventQueue(clock=clock), MemoryStateStore(), MemoryTraceStore(), MemoryCronLock(), clock)
    if engine == "sqlite":
        opened = open_sqlite(tmp_path / "stepline.db", clock=clock)
        return Adapters(opened.queue, opened.state, opened.traces, opened.cron, clock)  # type: ignore[arg-type]
    raise ValueError(engine)


@pytest.fixture(params=ENGINES)
async def adapters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Adapters]:
    opened = await open_adapters(request.param, tmp_path, FakeClock())
    yield opened
    for part in (opened.queue, opened.state, opened.traces, opened.cron):
        await part.close()
