"""The engine: emits events, runs handlers for deliveries, API requests and cron ticks, and traces it all.

It knows nothing of SQLite, Redis or HTTP: storage comes in through the Protocols of `_protocols`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from . import _json
from ._config import ApiConfig, EventConfig
from ._context import Context, Recorder, State, StepLogger
from ._errors import SchemaValidationError, UndeclaredEmitError
from ._ids import new_id
from ._llm import LLM, LLMClient
from ._project import Project, Step
from ._protocols import ClaimSpec, Delivery, Event, EventQueue, StateStore, TraceRecord, TraceStore
from ._request import ApiRequest
from ._settings import LLMSettings
from ._sync import SyncContext

STOPPED_TRACES = "stepline.stopped"  # the state group of stopped traces, by trace id


async def stop_trace(state: StateStore, trace_id: str, reason: str = "") -> None:
    """A person stops a trace: engines reading `state` dead-letter its next deliveries (within a second)."""
    await state.set(STOPPED_TRACES, trace_id, {"at": time.time(), "reason": reason})


async def resume_trace(state: StateStore, trace_id: str) -> bool:
    """Lift a stop; False if the trace was not stopped."""
    return await state.delete(STOPPED_TRACES, trace_id)


log = logging.getLogger("stepline.engine")

# A lease must outlive the handler's own timeout, or a slow-but-healthy run would be handed out twice.
_LEASE_MARGIN = 10.0
_TRACE_LINGER = 0.02


class Engine:
    def __init__(
        self,
        project: Project,
        *,
        queue: EventQueue,
        state: StateStore,
        traces: TraceStore,
        concurrency: int = 64,
        poll_interval: float = 1.0,
        idempotency_window: float = 86400.0,
        rand: Callable[[], float] = random.random,
        llm: LLMSettings | None = None,
    ) -> None:
        self.project = project
        self.llm = LLMClient(llm or LLMSettings())
        self.queue = queue
        self.state = state
        self.traces = traces
        self.concurrency = concurrency
        self._poll = poll_interval
        self.idempotency_window = idempotency_window
        self._rand = rand
        self._inflight: set[asyncio.Task[None]] = set()
        self._buffer: deque[TraceRecord] = deque()
        self._flushed = asyncio.Event()
        self._activity = asyncio.Event()
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stepline-sync")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stopped: set[str] = set()  # traces a person stopped (`stepline traces stop`)
        self._listeners: set[asyncio.Queue[TraceRecord]] = set()  # live views (the Workbench)
        self._stopped_read = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._work(), name="stepline-worker"),
            asyncio.create_task(self._flush_loop(), name="stepline-traces"),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight handlers finish within `grace` seconds, then flush traces.

        Handlers still running after the grace period are cancelled; their deliveries stay leased and
        run again once the lease expires (never lost)."""
        self._running = False
        self._activity.set()
        for task in self._tasks:
            task.cancel()
        if self._inflight:
            _done, pending = await asyncio.wait(self._inflight, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()
        await self.llm.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def replace_project(self, project: Project) -> None:
        """Hot reload: new deliveries run the new code; queued events stay queued, in-flight ones finish."""
        self.project = project
        self._activity.set()

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until no event is queued, leased or delayed and no handler runs (for tests and `emit --local`)."""
        async with asyncio.timeout(timeout):
            while True:
                stats = await self.queue.stats()
                if not self._inflight and stats.pending == 0:
                    break
                self._activity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._activity.wait(), 0.05)
        await self.flush()

    # -- traces ----------------------------------------------------------------------------------

    def subscribe(self, queue: asyncio.Queue[TraceRecord]) -> Callable[[], None]:
        """Every trace record from now on also goes to `queue` (dropped when it is full); returns the undo."""
        self._listeners.add(queue)
        return lambda: self._listeners.discard(queue)

    def _tell(self, record: TraceRecord) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(record)

    def record(self, record: TraceRecord) -> None:
        """Buffer a trace record (from any thread); a background task writes them in batches."""
        self._buffer.append(record)
        if self._listeners:
            if self._loop is None or threading.get_ident() == self._loop_thread:
                self._tell(record)
            else:
                self._loop.call_soon_threadsafe(self._tell, record)
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._flushed.set()
        else:
            self._loop.call_soon_threadsafe(self._flushed.set)

    async def flush(self) -> None:
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(len(self._buffer))]
            await self.traces.append(batch)

    async def _flush_loop(self) -> None:
        while True:
            await self._flushed.wait()
            # Under load, records arrive by the hundred: waiting a moment writes them in one transaction
            # instead of one each. Readers (the admin API, tests) call flush() first and lose nothing.
            await asyncio.sleep(_TRACE_LINGER)
            self._flushed.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("could not write trace records; retrying")
                await asyncio.sleep(1)

    # -- emitting --------------------------------------------------------------------------------

    async def emit(
        self,
        step: str | None,
        trace_id: str,
        topic: str,
        data: Any,
        message_group_id: str | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
        *,
        delivery_id: str | None = None,
    ) -> Event:
        """Accept an event: every current subscriber of `topic` gets a delivery.

        With an `idempotency_key` seen within the window, the event is a repeat: it is traced, not queued."""
        if step is not None:
            declared = self.project.steps[step].config.emit_topics if step in self.project.steps else []
            if topic not in declared:
                raise UndeclaredEmitError(step, topic, declared)
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"an event topic is a non-empty string, got {topic!r}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        data = _json.copy(data, f"data of the event {topic!r}")
        event = Event(new_id(), topic, data, trace_id, step, time.time(), message_group_id)
        subscribers = {s.name: delay + _delay_of(s) for s in self.project.subscribers(topic)}
        accepted = await self.queue.publish(event, subscribers, idempotency_key, self.idempotency_window)
        record: dict[str, Any] = {"topic": topic, "event_id": event.id, "subscribers": list(subscribers), "data": data}
        if message_group_id is not None:
            record["message_group_id"] = message_group_id
        if delay:
            record["delay"] = delay
        if idempotency_key is not None:
            record |= {"idempotency_key": idempotency_key, "duplicate": not accepted}
        if delivery_id is not None:
            record["delivery_id"] = delivery_id
        self.record(TraceRecord(trace_id, "emit", step, event.created_at, record))
        if not subscribers and not self.project.awaited_by(topic):
            log.warning("event %r has no subscribers", topic, extra={"trace_id": trace_id, "step": step})
        self._activity.set()
        return event

    async def emit_external(
        self,
        topic: str,
        data: Any,
        trace_id: str | None = None,
        *,
        message_group_id: str | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> Event:
        """An emit from outside any step (CLI, tests, the admin API): starts a trace of its own."""
        trace_id = trace_id or new_id()
        self.record(TraceRecord(trace_id, "trigger", None, time.time(), {"entry": f"emit {topic}"}))
        return await self.emit(None, trace_id, topic, data, message_group_id, delay, idempotency_key)

    # -- contexts ---------------------------------------------------------------------------------

    def context(self, step: Step, trace_id: str, delivery_id: str | None = None) -> Context:
        """A handler's `ctx`. In a delivery's run, every record it makes names the delivery: two runs of one
        step in one trace (a fan-out) can overlap, and a reader must tell whose log or emit is whose."""
        record: Recorder = self.record if delivery_id is None else partial(_in_run, self.record, delivery_id)
        return Context(
            step=step.name,
            trace_id=trace_id,
            flows=list(step.flows),
            emitter=self.emit if delivery_id is None else partial(self.emit, delivery_id=delivery_id),
            state=State(self.state, record, trace_id, step.name),
            logger=StepLogger(record, trace_id, step.name),
            llm=lambda ctx: LLM(self.llm, self, ctx, record),
            record=record,
        )

    async def call(self, step: Step, ctx: Context, *args: Any) -> Any:
        """Run a handler: async on the loop, sync on a worker thread with a blocking `ctx`."""
        assert step.handler is not None
        if step.is_async:
            return await step.handler(*args, ctx)
        loop = asyncio.get_running_loop()
        sync_ctx = SyncContext(ctx, loop)
        result = await loop.run_in_executor(self._threads, partial(step.handler, *args, sync_ctx))
        if asyncio.iscoroutine(result):  # a plain function that returned a coroutine
            return await result
        return result

    # -- API requests and cron ticks --------------------------------------------------------------

    async def call_api(self, step: Step, request: ApiRequest, trace_id: str | None = None) -> Any:
        """Run an API step's middleware chain and handler; return what the handler returned."""
        assert isinstance(step.config, ApiConfig)
        trace_id = trace_id or new_id()
        self.record(
            TraceRecord(
                trace_id,
                "trigger",
                step.name,
                time.time(),
                {"entry": f"{request.method} {request.path}", "type": "api"},
            )
        )
        ctx = self.context(step, trace_id)
        middleware = step.config.middleware

        if not middleware:
            return await self._traced(step, trace_id, {}, self.call(step, ctx, request))

        async def run(index: int) -> Any:
            if index < len(middleware):
                return await middleware[index](request, ctx, partial(run, index + 1))
            return await self.call(step, ctx, request)

        return await self._traced(step, trace_id, {}, run(0))

    async def run_cron(self, step: Step) -> str:
        trace_id = new_id()
        self.record(
            TraceRecord(trace_id, "trigger", step.name, time.time(), {"entry": f"cron {step.name}", "type": "cron"})
        )
        ctx = self.context(step, trace_id)
        with contextlib.suppress(Exception):  # recorded in the trace and logged by _traced
            await self._traced(step, trace_id, {}, self.call(step, ctx))
        return trace_id

    async def _traced(self, step: Step, trace_id: str, info: dict[str, Any], work: Awaitable[Any]) -> Any:
        started = time.time()
        self.record(TraceRecord(trace_id, "start", step.name, started, info))
        try:
            result = await work
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            self.record(
                TraceRecord(
                    trace_id,
                    "end",
                    step.name,
                    time.time(),
                    {
                        **info,
                        "status": status,
                        "duration_ms": _ms(started),
                        "error": _describe(exc),
                        "traceback": traceback.format_exc(),
                    },
                )
            )
            if status == "error":
                log.error(
                    "step %s failed: %s", step.name, _describe(exc), extra={"trace_id": trace_id, "step": step.name}
                )
            raise
        self.record(
            TraceRecord(trace_id, "end", step.name, time.time(), {**info, "status": "ok", "duration_ms": _ms(started)})
        )
        return result

    # -- the delivery loop ------------------------------------------------------------------------

    def _specs(self) -> dict[str, ClaimSpec]:
        specs: dict[str, ClaimSpec] = {}
        for step in self.project.event_steps:
            assert isinstance(step.config, EventConfig)
            infra = step.config.infrastructure
            lease = infra.queue.visibility_timeout or infra.handler.timeout + _LEASE_MARGIN
            specs[step.name] = ClaimSpec(lease, infra.queue.type == "fifo", infra.handler.concurrency)
        return specs

    async def _work(self) -> None:
        while self._running:
            await self._read_stopped()
            free = self.concurrency - len(self._inflight)
            deliveries = await self.queue.claim(self._specs(), free) if free > 0 else []
            for delivery in deliveries:
                task = asyncio.create_task(self._deliver(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
            if not deliveries:
                if free > 0:
                    await self.queue.wait(self._poll)
                else:
                    self._activity.clear()
                    await self._activity.wait()

    async def _read_stopped(self) -> None:
        # Once a second at most: stopping is a person's act, and another process (the CLI) may do it.
        now = time.monotonic()
        if now - self._stopped_read >= 1.0:
            self._stopped_read = now
            self._stopped = set(await self.state.get_group(STOPPED_TRACES))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._activity.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task crashed", exc_info=task.exception())

    async def _deliver(self, delivery: Delivery) -> None:
        step = self.project.steps.get(delivery.step)
        event = delivery.event
        info = {"delivery_id": delivery.id, "event_id": event.id, "topic": event.topic, "attempt": delivery.attempt}
        if step is None or not isinstance(step.config, EventConfig):
            # The step went away in a reload after the delivery was claimed: keep it for later.
            await self.queue.retry(delivery, 1.0, f"step {delivery.step!r} is not loaded")
            return
        if event.trace_id in self._stopped:
            # Kept, not dropped: `stepline traces resume` and a replay run it after all.
            await self._dead_letter(delivery, "the trace was stopped by a person (stepline traces stop)", None)
            return
        config = step.config
        data = event.data
        if config.input is not None:
            try:
                data = config.input.validate(event.data, f"the input of step {step.name!r}")
            except SchemaValidationError as exc:
                # Retrying cannot fix the data: record why, and dead-letter it where it can be replayed.
                self.record(
                    TraceRecord(
                        event.trace_id,
                        "end",
                        step.name,
                        time.time(),
                        {
                            **info,
                            "status": "error",
                            "duration_ms": 0.0,
                            "error": str(exc),
                            "errors": [e.to_dict() for e in exc.errors],
                        },
                    )
                )
                log.error("%s; not handled", exc, extra={"trace_id": event.trace_id, "step": step.name})
                await self._dead_letter(delivery, str(exc), None)
                return
        ctx = self.context(step, event.trace_id, delivery.id)
        try:
            async with asyncio.timeout(config.infrastructure.handler.timeout):
                await self._traced(step, event.trace_id, info, self.call(step, ctx, data))
        except TimeoutError:
            await self._failed(step, delivery, f"timed out after {config.infrastructure.handler.timeout}s", None)
        except asyncio.CancelledError:
            raise  # shutting down: the lease expires and the delivery runs again
        except Exception as exc:
            await self._failed(step, delivery, _describe(exc), traceback.format_exc())
        else:
            await self.queue.ack(delivery)

    async def _failed(self, step: Step, delivery: Delivery, error: str, tb: str | None) -> None:
        assert isinstance(step.config, EventConfig)
        queue_settings = step.config.infrastructure.queue
        if delivery.attempt <= queue_settings.max_retries:
            delay = queue_settings.backoff.delay(delivery.attempt, self._rand())
            self.record(
                TraceRecord(
                    delivery.event.trace_id,
                    "retry",
                    step.name,
                    time.time(),
                    {"delivery_id": delivery.id, "attempt": delivery.attempt, "delay": round(delay, 3), "error": error},
                )
            )
            await self.queue.retry(delivery, delay, error)
        else:
            await self._dead_letter(delivery, error, tb)

    async def _dead_letter(self, delivery: Delivery, error: str, tb: str | None) -> None:
        self.record(
            TraceRecord(
                delivery.event.trace_id,
                "dead_letter",
                delivery.step,
                time.time(),
                {"delivery_id": delivery.id, "attempts": delivery.attempt, "error": error},
            )
        )
        await self.queue.dead_letter(delivery, error, tb)


def _delay_of(step: Step) -> float:
    config = step.config
    return config.infrastructure.queue.delay_seconds if isinstance(config, EventConfig) else 0.0


def _in_run(record: Recorder, delivery_id: str, r: TraceRecord) -> None:
    r.data.setdefault("delivery_id", delivery_id)
    record(r)


def _ms(started: float) -> float:
    return round((time.time() - started) * 1000, 3)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
