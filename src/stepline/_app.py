"""`Stepline`: a project, its engine, its cron scheduler and its ASGI app, as one object to run, mount or test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ._engine import Engine
from ._errors import Problem, ProjectLoadError
from ._http import HttpApp
from ._loader import load_project
from ._project import Project
from ._protocols import Event, EventQueue, StateStore, TraceStore
from ._scheduler import CronScheduler
from .adapters.memory import MemoryEventQueue, MemoryStateStore, MemoryTraceStore


class Stepline:
    """Load the project at `root` and wire it up. Raises ProjectLoadError listing every problem.

    Run it with uvicorn (`uvicorn.run(Stepline(".").asgi)`), mount `.asgi` inside a FastAPI or
    Starlette app (pass `lifespan=sl.lifespan` to that app so the engine starts), or drive it from
    tests with `async with sl.lifespan(): ...`.
    """

    def __init__(
        self,
        root: str | Path = ".",
        *,
        dev: bool = False,
        admin_token: str | None = None,
        concurrency: int = 64,
        adapters: tuple[EventQueue, StateStore, TraceStore] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.dev = dev
        self.project: Project = load_project(self.root)
        queue, state, traces = adapters or (MemoryEventQueue(), MemoryStateStore(), MemoryTraceStore())
        self.engine = Engine(self.project, queue=queue, state=state, traces=traces, concurrency=concurrency)
        self.scheduler = CronScheduler(self.engine)
        self.asgi = HttpApp(self.engine, dev=dev, admin_token=admin_token, on_startup=self.start, on_shutdown=self.stop)
        self._cron_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._cron_task is not None:
            return
        await self.engine.start()
        self._cron_task = asyncio.create_task(self.scheduler.run(), name="stepline-cron")

    async def stop(self, grace: float = 10.0) -> None:
        if self._cron_task is None:
            return
        self._cron_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._cron_task
        self._cron_task = None
        await self.engine.stop(grace)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """An ASGI lifespan: `FastAPI(lifespan=sl.lifespan)`, or `async with sl.lifespan():` in tests."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def reload(self) -> list[Problem]:
        """Load the project again. On problems, keep the last good version running and return them."""
        try:
            project = load_project(self.root)
        except ProjectLoadError as exc:
            return exc.problems
        self.project = project
        self.engine.replace_project(project)
        self.asgi.set_project(project)
        self.scheduler.project_changed()
        return []

    async def emit(self, topic: str, data: Any = None) -> Event:
        """Emit from outside any step: starts a new trace."""
        return await self.engine.emit_external(topic, data)

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every queued event has been handled."""
        await self.engine.settle(timeout)
