"""Notices a blocked event loop, and names what blocks it.

Every async handler, API request and background loop of a process shares one event loop. A handler that
blocks it (`time.sleep`, a blocking HTTP client, a long computation) stops all of them, and even its own
timeout cannot fire until it gives the loop back. A thread beside the loop pings it every `interval`
seconds; when a ping goes unanswered for `after` seconds, the thread looks at what the loop thread is
running and reports it once (`on_blocked`), then once more when the loop answers again (`on_unblocked`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType


@dataclass
class Blocked:
    """One stretch of time the loop did not answer."""

    where: str  # "steps/slow_step.py:7 in handler", or the innermost frame when no project code is on the stack
    task: asyncio.Task[object] | None  # what the loop was running, if it was running a task
    started: float  # time.monotonic() of the unanswered ping
    stack: list[FrameType] = field(default_factory=list)  # the loop thread's frames then, innermost first
    seconds: float = 0.0  # how long it lasted, once it is over


class LoopWatchdog:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        root: Path | None,
        on_blocked: Callable[[Blocked], None],
        on_unblocked: Callable[[Blocked], None],
        after: float = 1.0,
        interval: float = 0.1,
    ) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop's own thread
        self._root = root
        self._on_blocked = on_blocked
        self._on_unblocked = on_unblocked
        self._after = after
        self._interval = interval
        self._stop = threading.Event()
        self._answered = True
        self._sent = 0.0
        self._thread = threading.Thread(target=self._watch, name="stepline-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _pong(self) -> None:
        self._answered = True

    def _watch(self) -> None:
        episode: Blocked | None = None
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            if self._answered:
                if episode is not None:
                    episode.seconds = now - episode.started
                    self._on_unblocked(episode)
                    episode = None
                self._answered = False
                self._sent = now
                try:
                    self._loop.call_soon_threadsafe(self._pong)
                except RuntimeError:  # the loop is closed
                    return
            elif episode is None and now - self._sent >= self._after:
                task = asyncio.current_task(self._loop)  # a dict lookup: safe from this thread
                stack = self._stack()
                episode = Blocked(self._where(stack), task, self._sent, stack)
                self._on_blocked(episode)
                episode.stack = []  # frames hold their locals: keep them no longer than the report

    def _stack(self) -> list[FrameType]:
        frame = sys._current_frames().get(self._loop_thread)
        stack = []
        while frame is not None:
            stack.append(frame)
            frame = frame.f_back
        return stack

    def _where(self, stack: list[FrameType]) -> str:
        for frame in stack:
            if self._is_project(frame.f_code.co_filename):
                return _describe(frame, self._root)
        return _describe(stack[0], None) if stack else "(unknown)"

    def _is_project(self, filename: str) -> bool:
        if self._root is None or "site-packages" in filename:
            return False
        return filename.startswith(str(self._root))


def _describe(frame: FrameType, root: Path | None) -> str:
    filename = frame.f_code.co_filename
    if root is not None and filename.startswith(str(root) + "/"):
        filename = filename[len(str(root)) + 1 :]
    return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
