"""One suite, every store: each test here runs against every store in tests/stores.py, opened by its URL
on a fake clock, and touches only what the Protocols of `stepline.adapters.base` promise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stepline import adapters as stores
from stepline.adapters.base import CronLock, EventQueue, StateStore, StoreOptions, TraceStore
from stepline.testing import FakeClock
from tests.stores import STORES, StoreKind


@dataclass
class Adapters:
    """The store under test, and the clock its leases, delays and windows run on."""

    opened: stores.Adapters
    clock: FakeClock

    @property
    def queue(self) -> EventQueue:
        return self.opened.queue

    @property
    def state(self) -> StateStore:
        return self.opened.state

    @property
    def control(self) -> StateStore:
        return self.opened.control

    @property
    def traces(self) -> TraceStore:
        return self.opened.traces

    @property
    def cron(self) -> CronLock:
        return self.opened.cron


@pytest.fixture(params=STORES, ids=str)
async def adapters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Adapters]:
    kind: StoreKind = request.param
    clock = FakeClock()
    url = kind.url(tmp_path)
    opened = stores.open_store(url, StoreOptions(root=tmp_path, clock=clock))
    try:
        yield Adapters(opened, clock)
    finally:
        await opened.close()
        kind.cleanup(url)
