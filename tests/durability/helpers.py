"""Servers in processes of their own, and a probe that reads what they left through the store's Protocols
(so that the same test runs on every store several processes can share)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx

from stepline._errors import StoreError
from stepline.adapters import open_store
from stepline.adapters.base import Adapters, DeadLetter, QueueStats, StoreOptions

STEPLINE = str(Path(sys.executable).parent / "stepline")
T = TypeVar("T")


def start_server(root: Path, port: int, log: Path, *extra: str, store: str | None = None) -> subprocess.Popen[bytes]:
    """`stepline start` (on `store`, else the default one), in a process group of its own, so that a test
    can kill it and its workers at once."""
    where = ["--store", store] if store else []
    with log.open("ab") as out:
        return subprocess.Popen(
            [STEPLINE, "start", "--dir", str(root), "--host", "127.0.0.1", "--port", str(port), *where, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.TransportError, StoreError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def healthy(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/__stepline/health", timeout=2).status_code == 200


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


class Probe:
    """The store at a URL, open on an event loop of its own thread, read from plain (blocking) code: a
    test's view of what the servers did, as `stepline state` and `stepline dlq` see it."""

    def __init__(self, adapters: Adapters, loop: asyncio.AbstractEventLoop) -> None:
        self.adapters = adapters
        self._loop = loop

    def run(self, work: Callable[[Adapters], Awaitable[T]]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_call(work, self.adapters), self._loop)
        return future.result(timeout=60)

    def group(self, group: str) -> dict[str, Any]:
        return self.run(lambda a: a.state.get_group(group))

    def get(self, group: str, key: str) -> Any:
        return self.run(lambda a: a.state.get(group, key))

    def dead_letters(self) -> list[DeadLetter]:
        return self.run(lambda a: a.queue.dead_letters())

    def count(self, group: str) -> int:
        return len(self.group(group))

    def stats(self) -> QueueStats:
        return self.run(lambda a: a.queue.stats())

    def queued(self) -> int:
        """Deliveries still in the queue, due or not."""
        stats = self.stats()
        return stats.pending + stats.later


async def _call(work: Callable[[Adapters], Awaitable[T]], adapters: Adapters) -> T:
    return await work(adapters)


async def _open(store: str, root: Path) -> Adapters:
    return open_store(store, StoreOptions(root=root))


@contextmanager
def probe(store: str, root: Path) -> Iterator[Probe]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="probe", daemon=True)
    thread.start()
    adapters = asyncio.run_coroutine_threadsafe(_open(store, root), loop).result(timeout=60)
    try:
        yield Probe(adapters, loop)
    finally:
        asyncio.run_coroutine_threadsafe(adapters.close(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
