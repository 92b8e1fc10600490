"""The threads sync handlers run on.

Python cannot stop a thread, so a sync handler abandoned at its timeout goes on running. With a plain
thread pool it would keep its thread, and enough hung handlers would leave no thread for healthy ones.
Here an abandoned handler's thread leaves the pool (it ends when the handler returns) and a fresh
thread takes its place: hung handlers cost a thread each, never a healthy handler's slot.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("stepline.engine")


@dataclass(eq=False)
class SyncRun:
    """One sync handler call: its future, and the thread it runs on once started."""

    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)
    thread: threading.Thread | None = None
    abandoned: bool = False


class HandlerThreads:
    def __init__(self, size: int, name: str = "stepline-sync") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[SyncRun | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pool = 0  # threads taking jobs (abandoned ones no longer count)
        self._idle = 0
        self._abandoned: set[threading.Thread] = set()
        self._count = 0
        self._closed = False

    @property
    def abandoned(self) -> int:
        """Threads still running a handler that was abandoned at its timeout."""
        with self._lock:
            return sum(1 for t in self._abandoned if t.is_alive())

    def submit(self, fn: Callable[[], Any]) -> SyncRun:
        job = SyncRun(fn)
        with self._lock:
            if self._closed:
                raise RuntimeError("the handler threads are shut down")
            if self._idle == 0 and self._pool < self._size:
                self._start()
        self._jobs.put(job)
        return job

    def abandon(self, job: SyncRun) -> None:
        """The caller gave up on `job` (a timeout): its thread finishes the handler alone, then ends."""
        if job.future.done():
            return
        with self._lock:
            job.abandoned = True
            thread = job.thread
            if thread is None:  # not started yet: it never will be
                job.future.cancel()
                return
            self._abandoned.add(thread)
            self._pool -= 1
            if not self._closed:
                self._start()  # its replacement
            self._abandoned = {t for t in self._abandoned if t.is_alive()}
            running = len(self._abandoned)
        log.warning(
            "a sync handler was abandoned at its timeout; its thread runs on until the handler returns "
            "(Python cannot stop a thread). %d abandoned threads are still running.",
            running,
        )

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            pool = self._pool
        for _ in range(pool):
            self._jobs.put(None)

    def _start(self) -> None:  # with the lock held
        self._pool += 1
        self._count += 1
        thread = threading.Thread(target=self._work, name=f"{self._name}-{self._count}", daemon=True)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            with self._lock:
                if job.abandoned:  # given up on before it started
                    continue
                job.thread = threading.current_thread()
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.fn()
            except BaseException as exc:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            with self._lock:
                if job.abandoned:
                    self._abandoned.discard(threading.current_thread())
                    return  # a replacement took this thread's place in the pool
