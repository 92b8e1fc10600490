"""`Stepline`: a project, its engine, its cron scheduler and its ASGI app, as one object to run, mount or test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from stepline._clock import SYSTEM_CLOCK, Clock
from stepline._errors import Problem, ProjectLoadError, StoreUnavailableError
from stepline._health import Health
from stepline.adapters import STORE_ENV, legacy_store_url, open_store
from stepline.adapters.base import Adapters, DeadLetter, Event, StoreOptions
from stepline.agents.llm import LLMClient
from stepline.agents.mcp import close_sessions as close_mcp_sessions
from stepline.context import Context
from stepline.core.engine import Engine, replay_all
from stepline.core.scheduler import CronScheduler
from stepline.core.streams import Hub
from stepline.http.app import HttpApp
from stepline.http.cors import CorsOptions
from stepline.http.streams import Authenticate, StreamEndpoints
from stepline.steps.loader import load_project
from stepline.steps.project import Project
from stepline.steps.settings import LLMSettings, load_settings

log = logging.getLogger("stepline")

# What a process does (`stepline start --role`): everything; serve the API steps only (their emits go to
# the store, for workers to run); or run event and cron steps only (answering health checks, nothing else).
Role = Literal["all", "api", "worker"]
ROLES: tuple[Role, ...] = ("all", "api", "worker")

DAY = 86400.0
MB = 1024 * 1024
_PRUNE_EVERY = 60.0


class Stepline:
    """Load the project at `root` and wire it up. Raises ProjectLoadError listing every problem.

    `store` is a store URL (docs/durability.md): without one, `$STEPLINE_STORE`, else the durable default,
    a file in `.stepline/` under the project root; `store="memory://"` keeps everything in the process.
    Run it with uvicorn
    (`uvicorn.run(Stepline(".").asgi)`), mount `.asgi` inside a FastAPI or Starlette app (pass
    `lifespan=sl.lifespan` to that app so the engine starts), or drive it from tests with
    `async with sl.lifespan(): ...`.
    """

    def __init__(
        self,
        root: str | Path = ".",
        *,
        dev: bool = False,
        admin_token: str | None = None,
        concurrency: int | None = None,
        store: str | Adapters | None = None,
        trace_retention: float | None = None,
        trace_max_bytes: int | Literal["default"] | None = "default",
        idempotency_window: float | None = None,
        llm: LLMSettings | None = None,
        max_body: int | None = None,
        body_timeout: float | None = None,
        allowed_hosts: list[str] | None = None,
        cors_origins: list[str] | None = None,
        clock: Clock | None = None,
        role: Role | None = None,
        engine: str | None = None,
        database: str | Path | None = None,
        synchronous: str | None = None,
        stream_auth: Authenticate | None = None,
    ) -> None:
        # An option not given here is read from stepline.toml (docs/configuration.md), else its default.
        self.root = Path(root).resolve()
        self.dev = dev
        self.project: Project = load_project(self.root)
        self._llm_override = llm
        self.settings = load_settings(self.root)
        if llm is not None:
            self.settings.llm = llm
        role = role if role is not None else self.settings.server.role
        if role not in ROLES:
            raise ValueError(f"role is one of {', '.join(ROLES)}, not {role!r}")
        self.role: Role = role
        legacy = legacy_store_url(engine, database, synchronous)
        if legacy is not None:
            if store is not None:
                raise TypeError("give store= alone: engine=, database= and synchronous= are its deprecated spelling")
            warnings.warn(
                f"Stepline(engine=, database=, synchronous=) are deprecated; use store={legacy!r} "
                f"(or ${STORE_ENV}); see CHANGELOG.md",
                DeprecationWarning,
                stacklevel=2,
            )
            store = legacy
        if store is None and not os.environ.get(STORE_ENV, "").strip():
            store = self.settings.store.url  # the file's store; the environment's wins over it
        if isinstance(store, Adapters):
            if clock is not None and clock is not store.clock:
                raise TypeError("the store was opened on another clock: open it with StoreOptions(clock=...)")
            self.health = store.health or Health()
            self.adapters = store
        else:
            self.health = Health()
            options = StoreOptions(root=self.root, health=self.health, clock=clock or SYSTEM_CLOCK)
            self.adapters = open_store(store, options)
        self.clock = self.adapters.clock
        if role == "api" and self.adapters.per_process:
            raise ValueError(
                f"role='api' publishes events for worker processes to run, but {self.adapters.url} lives in this "
                "process alone: give a store the workers share (the default file, or redis://)"
            )
        traces = self.settings.traces
        self.trace_retention = trace_retention if trace_retention is not None else traces.keep_days * DAY
        if trace_max_bytes == "default":
            trace_max_bytes = int(traces.max_mb * MB) or None
        self.trace_max_bytes = trace_max_bytes
        http = self.settings.http
        engine_settings = self.settings.engine
        self.cors_origins = cors_origins if cors_origins is not None else http.cors_origins
        self.engine = Engine(
            self.project,
            queue=self.adapters.queue,
            state=self.adapters.state,
            traces=self.adapters.traces,
            control=self.adapters.control,
            concurrency=concurrency if concurrency is not None else engine_settings.concurrency,
            idempotency_window=idempotency_window
            if idempotency_window is not None
            else engine_settings.idempotency_window,
            health=self.health,
            context_factory=self._context,
            clock=self.clock,
            consume=role != "api",
            feed=self.adapters.feed,
        )
        self.llm = LLMClient(self.settings.llm)  # one per app: connections stay warm across steps
        self.scheduler = CronScheduler(self.engine, self.adapters.cron)
        self.streams: Hub | None = (
            Hub(self.adapters.streams, self.project.streams) if self.adapters.streams is not None else None
        )
        self._stream_auth = stream_auth
        self._authenticator: Authenticate | None = None
        self._authenticator_loaded = False
        problem = self._check_authenticator()
        if problem is not None:
            raise ProjectLoadError(self.root, [problem])
        self.asgi = HttpApp(
            self.engine,
            dev=dev,
            admin_token=admin_token,
            on_startup=self.start,
            on_shutdown=self.stop,
            max_body=max_body if max_body is not None else http.max_body,
            body_timeout=body_timeout if body_timeout is not None else http.body_timeout,
            # allowances add up: the file's hosts, and those given here (the CLI's and $STEPLINE_ALLOWED_HOSTS)
            allowed_hosts=[*http.allowed_hosts, *(allowed_hosts or [])],
            routes=role != "worker",
            streams=StreamEndpoints(lambda: self.streams, self._authenticate),
            cors=CorsOptions(list(self.cors_origins)) if self.cors_origins else None,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._tasks:
            return
        try:
            await self.adapters.verify()  # a store that would lose events is refused before anything runs
        except StoreUnavailableError as exc:  # not up yet: the loops retry by themselves, readiness says so
            log.warning("the store cannot be reached yet (%s); starting, and retrying until it answers", exc)
        await self.engine.start()
        self._tasks = [asyncio.create_task(self._prune_traces(), name="stepline-prune")]
        if self.role != "api":  # cron ticks are published by the processes that run steps
            self._tasks.append(asyncio.create_task(self.scheduler.run(), name="stepline-cron"))

    async def stop(self, grace: float = 10.0) -> None:
        """Drain: stop taking work, give running handlers `grace` seconds, then close the storage."""
        if not self._tasks:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.engine.stop(grace)
        if self.streams is not None:
            await self.streams.close()
        await self.llm.close()
        await close_mcp_sessions()  # the servers mcp_tools started, with the handlers that used them done
        await self.adapters.close()

    def _context(self, **parts: Any) -> Context:
        """The engine's context factory: its RunContext, with the agent features (ctx.llm and the rest)."""
        return Context(**parts, client=self.llm, caller=self.engine, streams=self.streams)

    def _check_authenticator(self) -> Problem | None:
        """stepline.toml's `[streams] authenticate`, imported now: a wrong name is found at start, not by the
        first client (who would only be told that authentication failed)."""
        if self._stream_auth is not None or self.settings.streams.authenticate is None:
            return None
        self._authenticator_loaded = False
        try:
            self._authenticate()
        except Exception as exc:
            return Problem(
                "stepline.toml",
                "streams.authenticate",
                f"{self.settings.streams.authenticate!r} cannot be used: {type(exc).__name__}: {exc}",
                'name a function of the project as "module:function": "auth:authenticate" for '
                "`def authenticate(request)` in auth.py at the project root",
            )
        return None

    def _authenticate(self) -> Authenticate | None:
        """The stream clients' authenticate hook: Stepline(stream_auth=...), else stepline.toml's."""
        if self._stream_auth is not None:
            return self._stream_auth
        if not self._authenticator_loaded:  # imported on first use: the hook lives in the project's code
            self._authenticator = self.settings.streams.authenticator()
            self._authenticator_loaded = True
        return self._authenticator

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
            settings = load_settings(self.root)
        except ProjectLoadError as exc:
            return exc.problems
        previous = self.settings
        now, before = settings.restart_only(), previous.restart_only()
        changed = [table for table, value in now.items() if value != before[table]]
        if changed:
            log.warning(
                "stepline.toml's %s changed: read at start, it takes effect when the server restarts",
                ", ".join(f"[{t}]" for t in changed),
            )
        self.settings = settings
        problem = self._check_authenticator()  # the hook's module may have changed: imported again
        if problem is not None:
            self.settings = previous
            self._check_authenticator()  # the last good hook again
            return [problem]
        if self._llm_override is not None:
            settings.llm = self._llm_override
        elif settings.llm != previous.llm:
            self.llm = LLMClient(settings.llm)  # calls under way finish on the old client
        self.project = project
        if self.streams is not None:
            self.streams.set_streams(project.streams)
        self.engine.replace_project(project)
        self.asgi.set_project(project)
        self.scheduler.project_changed()
        return []

    async def emit(
        self,
        topic: str,
        data: Any = None,
        *,
        message_group_id: str | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> Event:
        """Emit from outside any step: starts a new trace."""
        return await self.engine.emit_external(
            topic, data, message_group_id=message_group_id, delay=delay, idempotency_key=idempotency_key
        )

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every queued event has been handled."""
        await self.engine.settle(timeout)

    # -- dead letters ------------------------------------------------------------------------------

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        return await self.adapters.queue.dead_letters(limit)

    async def replay(self, delivery_id: str | None = None) -> int:
        """Replay one dead letter (by delivery id), or all of them; returns how many went back."""
        if delivery_id is not None:
            return int(await self.adapters.queue.replay(delivery_id))
        return len(await replay_all(self.adapters.queue))

    async def purge(self, delivery_id: str | None = None) -> int:
        return await self.adapters.queue.purge(None if delivery_id is None else [delivery_id])

    async def _prune_traces(self) -> None:
        """Traces older than `trace_retention` go, then the oldest while they take more than `trace_max_bytes`."""
        while True:
            try:
                removed = await self.adapters.traces.prune(
                    self.clock.time() - self.trace_retention, self.trace_max_bytes
                )
            except Exception as exc:
                pause = self.health.failed("pruning", exc, "traces grow until it recovers")
                await asyncio.sleep(pause)
                continue
            self.health.recovered("pruning")
            if removed:
                cap = f" or over {self.trace_max_bytes / MB:,.0f} MB" if self.trace_max_bytes else ""
                log.info("pruned %d traces older than %g days%s", removed, self.trace_retention / DAY, cap)
            await self.clock.sleep(_PRUNE_EVERY)
