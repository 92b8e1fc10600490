"""The engine: emits events, runs handlers for deliveries, API requests and cron ticks, and traces it all.

It knows nothing of SQLite, Redis or HTTP: storage comes in through the Protocols of `adapters.base`.

Every background loop here (delivery, lease renewal, trace writing) survives any exception: it reports
to `health` (which logs it once, with what to do), pauses, and tries again; the work it could not do
stays in the store. A delivery's lease is renewed while its handler runs, so a live run is never handed
out twice; a run whose worker died counts as an attempt, and the last one goes to the dead letters.
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
from datetime import UTC, datetime
from functools import partial
from types import FrameType
from typing import Any, cast

from stepline import _json
from stepline._clock import SYSTEM_CLOCK, Clock, SystemClock
from stepline._errors import (
    BacklogFullError,
    CodeChangedError,
    JournalLimitError,
    SchemaValidationError,
    StoreError,
    StoreUnavailableError,
    Suspended,
    UndeclaredEmitError,
)
from stepline._health import Health
from stepline._ids import new_id
from stepline.adapters.base import (
    ClaimSpec,
    Delivery,
    Event,
    EventQueue,
    RecordFeed,
    StateStore,
    TraceRecord,
    TraceStore,
)
from stepline.core import trace as tr
from stepline.core.context import ContextFactory, Emitter, Recorder, RunContext, State, StepLogger
from stepline.core.durable import CANCEL, WAITS_STEP, Limits, Run, Waits
from stepline.core.threads import HandlerThreads
from stepline.core.watchdog import Blocked, LoopWatchdog
from stepline.steps.config import ApiConfig, CronConfig, EventConfig
from stepline.steps.project import Project, Step
from stepline.steps.request import ApiRequest
from stepline.steps.schema import MAX_ERRORS

STOPPED_TRACES = "stopped"  # the group of stopped traces in the store's control state, by trace id
_OWN_TOPICS = "stepline."  # topics of Stepline's own (an approval's decision): any step may emit them


async def stop_trace(control: StateStore, trace_id: str, reason: str = "", clock: Clock = SYSTEM_CLOCK) -> None:
    """A person stops a trace: engines on the store whose `control` state this is dead-letter its next
    deliveries (within a second)."""
    await control.set(STOPPED_TRACES, trace_id, {"at": clock.time(), "reason": reason})


async def resume_trace(control: StateStore, trace_id: str) -> bool:
    """Lift a stop; False if the trace was not stopped."""
    return await control.delete(STOPPED_TRACES, trace_id)


async def stopped(control: StateStore, trace_id: str) -> bool:
    return await control.get(STOPPED_TRACES, trace_id) is not None


async def replay_all(queue: EventQueue, page: int = 1000) -> list[str]:
    """Put every dead letter there is now back in the queue; returns their ids. Goes a page at a time, and
    stops at letters it replayed already (one that failed again while this ran is not replayed twice)."""
    replayed: list[str] = []
    seen: set[str] = set()
    while True:
        fresh = [d.delivery_id for d in await queue.dead_letters(page) if d.delivery_id not in seen]
        if not fresh:
            return replayed
        for delivery_id in fresh:
            seen.add(delivery_id)
            if await queue.replay(delivery_id):
                replayed.append(delivery_id)


log = logging.getLogger("stepline.engine")

# The steps that events (and cron ticks) are delivered to.
Delivered = Step[EventConfig] | Step[CronConfig]

# A lease must outlive the handler's own timeout, or a slow-but-healthy run would be handed out twice.
_LEASE_MARGIN = 10.0
_WAITS_LEASE = 30.0  # an offer to the waits: a few store calls
_TRACE_LINGER = 0.02
_BACKLOG_FRESH = 0.1  # seconds a step's counted backlog is trusted (plus this process's emits since)
_FLUSH_BATCH = 5000
# Records kept while the trace store cannot take them (a full disk): past this, the oldest are dropped.
_TRACE_BUFFER = 100_000
# Event data, errors and tracebacks larger than this are cut in trace records (never in the event itself).
TRACE_DATA_LIMIT = 16 * 1024
_TRACE_TEXT_LIMIT = 8 * 1024
LOST_ATTEMPT = (
    "its worker died during the run (the process exited or was killed: os._exit, a crash, the OOM killer), "
    "or stopped renewing the lease (a blocked event loop)"
)
BLOCKING_ADVICE = (
    "while an async handler blocks, nothing else in this process runs and its timeout cannot fire: await an "
    "async call instead, move the blocking call to `await asyncio.to_thread(...)`, or make the handler a plain "
    "`def` (it then runs on a thread)"
)


class Engine:
    def __init__(
        self,
        project: Project,
        *,
        queue: EventQueue,
        state: StateStore,
        traces: TraceStore,
        control: StateStore,
        concurrency: int = 64,
        poll_interval: float = 1.0,
        idempotency_window: float = 86400.0,
        rand: Callable[[], float] = random.random,
        context_factory: ContextFactory = RunContext,
        health: Health | None = None,
        renew_every: float = 1.0,
        blocked_after: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        consume: bool = True,
        feed: RecordFeed | None = None,
        stall_after: float = 60.0,
        wait_lookback: float = 7 * 86400.0,
    ) -> None:
        self.project = project
        # Whether this engine runs the event and cron steps' handlers: not in an API process
        # (`stepline start --role api`), which only publishes.
        self.consume = consume
        # Every process's trace records (a shared store's): live views read it instead of this process's own.
        self._feed = feed
        self._relay: asyncio.Task[None] | None = None
        # The delivery loop goes round at least every poll interval (a claim, then a wait that ends within
        # it); one silent this long with room to run is stuck (a claim on a connection that never answers,
        # the silent stall Celery users report after reconnects) and is started again. Longer than any
        # store's own timeouts (SQLite's busy_timeout, 30 s) so that a slow store is not taken for a stall.
        self._stall_after = stall_after
        self._looped_at = 0.0  # when the delivery loop last went round (monotonic)
        self._full = False  # it waits for a running handler to finish: quiet, not stuck
        self._worker: asyncio.Task[None] | None = None  # the delivery loop's task
        # Time as the rules see it (stamps, delays, stop-mark reads); durations stay on perf_counter.
        self.clock = clock
        # How a handler's ctx is made from its parts: the app's adds the agent features (stepline.context).
        self.context_factory = context_factory
        self.queue = queue
        self.state = state
        self.traces = traces
        # Stepline's own records (stop marks; approvals and conversations, through ctx.control), apart from
        # the user's state so that they neither show among its groups nor collide with them.
        self.control = control
        self.health = health or Health()
        self.concurrency = concurrency
        self._poll = poll_interval
        self.idempotency_window = idempotency_window
        self._rand = rand
        self._renew_every = renew_every
        self._blocked_after = blocked_after
        self._inflight: dict[asyncio.Task[None], str] = {}  # a running delivery's task -> its delivery id
        self._leases: dict[str, tuple[Delivery, float]] = {}  # delivery id -> (delivery, lease seconds)
        self._settling: set[str] = set()  # deliveries whose outcome (ack, retry, dead letter) is being recorded
        self._backlogs: dict[str, tuple[int, float]] = {}  # step -> (its backlog as last counted, when)
        self._refusing: set[str] = set()  # steps whose backlog is at its limit now (said once in the log)
        # Where a task blocked the event loop, as the watchdog found it (set from its thread, read by the run).
        self._blocked: dict[asyncio.Task[Any] | None, str] = {}
        self._buffer: deque[TraceRecord] = deque()
        self._dropped = 0  # trace records dropped while the trace store failed
        self._flushed = asyncio.Event()
        self._activity = asyncio.Event()
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._threads = HandlerThreads(concurrency)
        self._watchdog: LoopWatchdog | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stopped: set[str] = set()  # traces a person stopped (`stepline traces stop`)
        self._listeners: set[asyncio.Queue[TraceRecord]] = set()  # live views (the Workbench)
        self._stopped_read = 0.0
        self._specs = _claim_specs(project)
        self._limits = _backlog_limits(project)
        self._lease_seconds = {name: spec.lease for name, spec in self._specs.items()}
        self._waited = project.waited_topics  # topics whose events also go to the waits (WAITS_STEP)
        self._waits = Waits(control, queue, clock, self.record, wait_lookback)
        self._cancels: dict[str, Any] = {}  # run id -> its cancellation, as last read from the store
        self._cancelling: set[str] = set()  # running deliveries this engine cancelled because a person asked
        self._cancels_read = 0.0
        self._journal_limits = _journal_limits(project)  # step -> its journal's limits

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._running = True
        self._tasks = [asyncio.create_task(self._flush_loop(), name="stepline-traces")]
        if self.consume:
            self._looped_at = time.monotonic()
            self._tasks += [
                self._start_work(),
                asyncio.create_task(self._renew_loop(), name="stepline-leases"),
                asyncio.create_task(self._watch_work(), name="stepline-stalls"),
            ]
        self._watchdog = LoopWatchdog(
            self._loop,
            root=self.project.root,
            on_blocked=self._loop_blocked,
            on_unblocked=self._loop_unblocked,
            after=self._blocked_after,
        )
        self._watchdog.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight handlers finish within `grace` seconds, then flush traces.

        Handlers still running after the grace period are cancelled; their deliveries run again (the store
        gives their leases back as it closes, or they run out), their attempts counted as lost."""
        self._running = False
        self._activity.set()
        if self._worker is not None:  # the claim loop first: lease renewal and trace writing go on meanwhile
            self._worker.cancel()
        if self._inflight:
            _done, pending = await asyncio.wait(self._inflight, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._relay is not None:
            self._tasks.append(self._relay)
            self._relay = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.stop()
        try:
            await self.flush()
        except Exception as exc:
            log.error("could not write %d trace records at shutdown: %s", len(self._buffer), exc)
        self._threads.shutdown()

    def replace_project(self, project: Project) -> None:
        """Hot reload: new deliveries run the new code; queued events stay queued, in-flight ones finish."""
        self.project = project
        self._specs = _claim_specs(project)
        self._limits = _backlog_limits(project)
        self._waited = project.waited_topics
        self._journal_limits = _journal_limits(project)
        self._lease_seconds = {name: spec.lease for name, spec in self._specs.items()}
        self._activity.set()

    async def settle(self, timeout: float = 30.0, horizon: float | None = None) -> None:
        """Wait until no event is queued, leased or due within `horizon` seconds (default: `timeout`) and no
        handler runs (for tests and `emit --local`). A delivery delayed past the horizon (a 24-hour approval
        timeout) is not waited for: it could not run before the timeout anyway. On a fake clock, which
        moves only when a test moves it, the horizon is now: delayed work waits for `clock.advance`."""
        deadline = time.monotonic() + timeout
        frozen = not isinstance(self.clock, SystemClock)
        async with asyncio.timeout(timeout):
            while True:
                left = 0.0 if frozen else deadline - time.monotonic()
                stats = await self.queue.stats(horizon=left if horizon is None else horizon)
                if not self._inflight and stats.pending == 0:
                    break
                self._activity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._activity.wait(), 0.05)
        await self.flush()

    @property
    def abandoned_threads(self) -> int:
        """Sync handlers abandoned at their timeout whose threads still run."""
        return self._threads.abandoned

    # -- traces ----------------------------------------------------------------------------------

    def subscribe(self, queue: asyncio.Queue[TraceRecord]) -> Callable[[], None]:
        """Every trace record from now on also goes to `queue` (dropped when it is full); returns the undo."""
        self._listeners.add(queue)
        if self._feed is not None and self._relay is None:
            self._relay = asyncio.get_running_loop().create_task(self._relay_feed(), name="stepline-feed")
        return lambda: self._listeners.discard(queue)

    async def _relay_feed(self) -> None:
        """The store's feed of every process's records, to this process's live views."""
        assert self._feed is not None
        while True:
            try:
                async for batch in self._feed.listen():
                    self.health.recovered("live feed")
                    for record in batch:
                        self._tell(record)
            except Exception as exc:
                await asyncio.sleep(self.health.failed("live feed", exc, "live views miss records meanwhile"))
            else:
                await asyncio.sleep(0.1)

    def _tell(self, record: TraceRecord) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(record)

    def _wake_writer(self, record: TraceRecord) -> None:
        self._flushed.set()
        if self._listeners and self._feed is None:
            self._tell(record)

    def record(self, record: TraceRecord) -> None:
        """Buffer a trace record (from any thread); a background task writes them in batches."""
        buffer = self._buffer
        if len(buffer) >= _TRACE_BUFFER:
            buffer.popleft()
            self._dropped += 1
        buffer.append(record)
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._flushed.set()
            if self._listeners and self._feed is None:  # with a feed, it comes back once written
                self._tell(record)
        else:  # a sync handler's thread, the watchdog
            with contextlib.suppress(RuntimeError):  # the loop is closed: flush() at stop took what it could
                self._loop.call_soon_threadsafe(self._wake_writer, record)

    async def flush(self) -> None:
        """Write the buffered records. On a failure they stay buffered, in order, for the next try."""
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), _FLUSH_BATCH))]
            try:
                await self.traces.append(batch)
            except BaseException:
                self._buffer.extendleft(reversed(batch))
                raise

    async def _flush_loop(self) -> None:
        while True:
            await self._flushed.wait()
            # Under load, records arrive by the hundred: waiting a moment writes them in one transaction
            # instead of one each. Readers (the admin API, tests) call flush() first and lose nothing.
            await asyncio.sleep(_TRACE_LINGER)
            self._flushed.clear()
            try:
                await self.flush()
            except Exception as exc:
                pause = self.health.failed(
                    "traces", exc, "trace records are kept in memory meanwhile (the newest 100,000) and written later"
                )
                self._flushed.set()
                await asyncio.sleep(pause)
            else:
                self.health.recovered("traces")
                if self._dropped:
                    log.error("%d trace records were dropped while the trace store failed", self._dropped)
                    self._dropped = 0

    # -- emitting --------------------------------------------------------------------------------

    def check_emit(self, step: str | None, topic: str, delay: float = 0.0) -> None:
        """What every emit must be: a step emits only the topics its config declares (the graph is drawn
        from them), a topic is a non-empty string, a delay is not negative."""
        if step is not None and not topic.startswith(_OWN_TOPICS):
            declared = self.project.steps[step].config.emit_topics if step in self.project.steps else []
            if topic not in declared:
                raise UndeclaredEmitError(step, topic, declared)
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"an event topic is a non-empty string, got {topic!r}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")

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
        trigger: TraceRecord | None = None,
    ) -> Event:
        """Accept an event: every current subscriber of `topic` gets a delivery.

        With an `idempotency_key` seen within the window, the event is a repeat: it is traced, not queued.
        Raises StoreError when the store cannot take it: then nothing was accepted (and nothing traced;
        `trigger`, the record of what started the trace, is recorded only for an accepted event)."""
        self.check_emit(step, topic, delay)
        raw = _json.dumps(data, f"data of the event {topic!r}")
        data = _json.loads(raw)  # a copy: what a durable store would give back, shared with no caller
        event = Event(new_id(), topic, data, trace_id, step, self.clock.time(), message_group_id)
        subscribers = {s.name: delay + _delay_of(s) for s in self.project.subscribers(topic)}
        limited = self._limits.get(topic)
        if limited and self._is_intake(step):
            await self._check_backlog(limited)
        # An event some step may wait for also goes, in the same write, to the waits: once it is accepted,
        # no crash can keep it from a wait_for that matches it.
        targets = {**subscribers, WAITS_STEP: delay} if topic in self._waited else subscribers
        accepted = await self.queue.publish(event, targets, idempotency_key, self.idempotency_window)
        shown = data if len(raw) <= TRACE_DATA_LIMIT else clipped(raw)
        record: dict[str, Any] = {"topic": topic, "event_id": event.id, "subscribers": list(subscribers), "data": shown}
        if message_group_id is not None:
            record["message_group_id"] = message_group_id
        if delay:
            record["delay"] = delay
        if idempotency_key is not None:
            record |= {"idempotency_key": idempotency_key, "duplicate": not accepted}
        if delivery_id is not None:
            record["delivery_id"] = delivery_id
        if trigger is not None:
            self.record(trigger)
        self.record(tr.emit(trace_id, step, event.created_at, record))
        if not subscribers and topic not in self._waited and not self.project.awaited_by(topic):
            log.warning("event %r has no subscribers", topic, extra={"trace_id": trace_id, "step": step})
        self._activity.set()
        return event

    def _is_intake(self, step: str | None) -> bool:
        """An emit from an API step or from outside any step: new work, which a backlog limit may refuse."""
        if step is None:
            return True
        emitter = self.project.steps.get(step)
        return emitter is not None and isinstance(emitter.config, ApiConfig)

    async def _check_backlog(self, limited: list[tuple[str, int]]) -> None:
        """Refuse the emit (BacklogFullError) when a subscriber's backlog is at its limit. The count is read
        from the store at most every 0.1 s per step, and this process's own emits since are added to it, so a
        busy API pays a store read per tenth of a second, not per request."""
        now = time.monotonic()
        for name, limit in limited:
            count, read_at = self._backlogs.get(name, (0, -1.0))
            if now - read_at >= _BACKLOG_FRESH:
                count, read_at = await self.queue.backlog(name), now
            if count >= limit:
                self._backlogs[name] = (count, read_at)
                if name not in self._refusing:
                    self._refusing.add(name)
                    log.warning(
                        "step %s has %d events waiting (its maxBacklog is %d): emits to it from API steps answer "
                        "503 until it drains",
                        name,
                        count,
                        limit,
                    )
                raise BacklogFullError(name, count, limit)
            if name in self._refusing:
                self._refusing.discard(name)
                log.warning("step %s is below its maxBacklog again: emits to it are accepted", name)
            self._backlogs[name] = (count + 1, read_at)

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
        trigger = tr.trigger(trace_id, None, self.clock.time(), f"emit {topic}")
        return await self.emit(None, trace_id, topic, data, message_group_id, delay, idempotency_key, trigger=trigger)

    async def publish_cron(self, step: Step[CronConfig], tick: float | None = None) -> str | None:
        """A cron tick becomes a delivery of the cron step, like any event's: leased, timed out, retried and
        dead-lettered. Every worker publishes every tick; the idempotency key `cron:{step}:{tick}` lets one
        of them through. `tick` None is a run asked for now (the Workbench's "run now"). Returns the new
        trace id, or None when another worker published this tick first."""
        config = step.config
        trace_id = new_id()
        now = self.clock.time()
        event = Event(new_id(), f"cron:{step.name}", {"tick": tick}, trace_id, None, now)
        key = window = None
        if tick is not None:
            key = f"cron:{step.name}:{round(tick)}"
            moment = datetime.fromtimestamp(tick, UTC)
            period = config.schedule.next_after(moment).timestamp() - tick
            window = max(3600.0, 2 * period)  # long enough to outlast any worker's late start
        accepted = await self.queue.publish(event, {step.name: 0.0}, key, window or self.idempotency_window)
        if not accepted:
            return None
        self.record(tr.trigger(trace_id, step.name, now, f"cron {step.name}", type="cron", tick=tick))
        self._activity.set()
        return trace_id

    async def run_cron(self, step: Step[CronConfig]) -> str:
        """Run a cron step now, outside its schedule (the Workbench's "run now"): a delivery like a tick's."""
        trace_id = await self.publish_cron(step)
        assert trace_id is not None  # no idempotency key: always accepted
        return trace_id

    # -- contexts ---------------------------------------------------------------------------------

    def context(
        self,
        step: Step,
        trace_id: str,
        delivery_id: str | None = None,
        run: Run | None = None,
        emitter: Emitter | None = None,
    ) -> RunContext:
        """A handler's `ctx`. In a delivery's run, every record it makes names the delivery: two runs of one
        step in one trace (a fan-out) can overlap, and a reader must tell whose log or emit is whose.
        `emitter` replaces where its emits go (a test that runs one handler alone keeps them)."""
        record: Recorder = self.record if delivery_id is None else partial(_in_run, self.record, delivery_id)
        if emitter is None:
            emitter = self.emit if delivery_id is None else partial(self.emit, delivery_id=delivery_id)
        return self.context_factory(
            step=step.name,
            trace_id=trace_id,
            flows=list(step.flows),
            emitter=emitter,
            state=State(self.state, record, trace_id, step.name, self.clock),
            control=self.control,
            logger=StepLogger(record, trace_id, step.name, self.clock),
            record=record,
            clock=self.clock,
            run=run,
        )

    async def call(self, step: Step, ctx: RunContext, *args: Any) -> Any:
        """Run a handler: async on the loop, sync on a thread of its own pool with a blocking `ctx`."""
        assert step.handler is not None
        if step.is_async:
            return await step.handler(*args, ctx)
        loop = asyncio.get_running_loop()
        run = self._threads.submit(partial(step.handler, *args, ctx.sync(loop)))
        try:
            result = await asyncio.wrap_future(run.future)
        except asyncio.CancelledError:
            self._threads.abandon(run)  # a timeout: the thread runs on alone, and is replaced in the pool
            raise
        if asyncio.iscoroutine(result):  # a plain function that returned a coroutine
            return await result
        return result

    # -- API requests -----------------------------------------------------------------------------

    async def call_api(self, step: Step[ApiConfig], request: ApiRequest, trace_id: str | None = None) -> Any:
        """Run an API step's middleware chain and handler; return what the handler returned."""
        trace_id = trace_id or new_id()
        self.record(tr.trigger(trace_id, step.name, self.clock.time(), f"{request.method} {request.path}", type="api"))
        ctx = self.context(step, trace_id)
        middleware = step.config.middleware

        if not middleware:
            return await self._traced(step, trace_id, {}, self.call(step, ctx, request))

        async def run(index: int) -> Any:
            if index < len(middleware):
                return await middleware[index](request, ctx, partial(run, index + 1))
            return await self.call(step, ctx, request)

        return await self._traced(step, trace_id, {}, run(0))

    async def _traced(
        self,
        step: Step,
        trace_id: str,
        info: dict[str, Any],
        work: Awaitable[Any],
        timeout: float | None = None,
    ) -> Any:
        """Run `work`, recording its start and end. With `timeout`, a run that ended past it without being
        cancelled (it never yielded to the event loop, which fires the timeout) fails as timed out."""
        started = time.perf_counter()
        self.record(tr.start(trace_id, step.name, self.clock.time(), info))
        try:
            result = await work
            took = time.perf_counter() - started
            if timeout is not None and took > timeout:
                raise _Overran(timeout, took, self._blocked.get(asyncio.current_task()))
        except Suspended as signal:
            # Not a failure: the run lets go of its worker and comes back when its time (or event) does.
            self.record(
                tr.end(trace_id, step.name, self.clock.time(), info, "suspended", _ms(started), waiting=signal.waiting)
            )
            raise
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            failed = tr.end(
                trace_id,
                step.name,
                self.clock.time(),
                info,
                status,
                _ms(started),
                error=clip(_describe(exc)),
                traceback=clip(traceback.format_exc(), tail=True),
            )
            if self._blocked:
                self._note_blocked(failed.data)
            self.record(failed)
            # A refused intake is the push-back asked for, not a failure: said once per step, not per request.
            if status == "error" and not isinstance(exc, BacklogFullError):
                log.error(
                    "step %s failed: %s", step.name, _describe(exc), extra={"trace_id": trace_id, "step": step.name}
                )
            raise
        done = tr.end(trace_id, step.name, self.clock.time(), info, "ok", _ms(started))
        if self._blocked:
            self._note_blocked(done.data)
        self.record(done)
        return result

    def _note_blocked(self, end: dict[str, Any]) -> None:
        """The watchdog saw this run block the loop: its end record says where."""
        where = self._blocked.pop(asyncio.current_task(), None)
        if where is not None:
            end["blocked_at"] = where

    # -- a blocked event loop (the watchdog calls these from its own thread) --------------------------

    def _loop_blocked(self, blocked: Blocked) -> None:
        run = _run_of(blocked.stack)
        if run is None:
            log.warning(
                "the event loop has been blocked for %.1f s at %s; %s",
                self._blocked_after,
                blocked.where,
                BLOCKING_ADVICE,
            )
            return
        assert blocked.task is not None
        self._blocked[blocked.task] = blocked.where
        step, trace_id, delivery_id = run
        log.warning(
            "step %s has blocked the event loop for %.1f s at %s; %s",
            step,
            self._blocked_after,
            blocked.where,
            BLOCKING_ADVICE,
            extra={"trace_id": trace_id, "step": step},
        )
        message = f"blocked the event loop for over {self._blocked_after:g} s at {blocked.where}"
        ids = {"delivery_id": delivery_id} if delivery_id is not None else {}
        self.record(tr.log(trace_id, step, self.clock.time(), "warn", message, {"blocked_at": blocked.where}, **ids))

    def _loop_unblocked(self, blocked: Blocked) -> None:
        log.warning("the event loop answers again after %.1f s blocked at %s", blocked.seconds, blocked.where)

    # -- the delivery loop ------------------------------------------------------------------------

    async def _work(self) -> None:
        while self._running:
            self._looped_at = time.monotonic()
            if self.health.failing:
                self.health.recovered("delivery loop")
            try:
                await self._read_stopped()
                free = self.concurrency - len(self._inflight)
                deliveries = await self.queue.claim(self._specs, free) if free > 0 else []
                self.health.recovered("delivery")
            except Exception as exc:
                await asyncio.sleep(
                    self.health.failed("delivery", exc, "no handler runs until it recovers; queued events wait")
                )
                continue
            for delivery in deliveries:
                task = asyncio.create_task(self._deliver(delivery))
                self._inflight[task] = delivery.id
                # Its lease is renewed from now until its task is done (see _finished).
                self._leases[delivery.id] = (delivery, self._lease_seconds.get(delivery.step, _LEASE_MARGIN))
                task.add_done_callback(self._finished)
            if not deliveries:
                if free > 0:
                    await self.queue.wait(self._poll)
                else:
                    self._activity.clear()
                    self._full = True
                    try:
                        await self._activity.wait()
                    finally:
                        self._full = False

    async def _watch_work(self) -> None:
        """Start the delivery loop again when it has stopped going round (see `stall_after`)."""
        while self._running:
            await asyncio.sleep(min(5.0, self._stall_after / 4))
            quiet = time.monotonic() - self._looped_at
            if not self._running or self._full or quiet < self._stall_after:
                continue
            self.health.failed(
                "delivery loop",
                f"it made no claim for {quiet:.0f} s with room to run handlers; it was started again",
                "if this repeats, the store's connection hangs: check the network to it",
            )
            if self._worker is not None:
                self._worker.cancel()
                self._tasks.remove(self._worker)
            self._looped_at = time.monotonic()
            self._tasks.append(self._start_work())

    def _start_work(self) -> asyncio.Task[None]:
        self._worker = asyncio.create_task(self._work(), name="stepline-worker")
        return self._worker

    async def _renew_loop(self) -> None:
        """Extend the lease of every running delivery, so that a live run is never handed out again."""
        while True:
            leases = list(self._leases.values())
            pause = min([self._renew_every, *(lease / 3 for _, lease in leases)])
            await asyncio.sleep(pause)
            leases = list(self._leases.values())
            if not leases:
                continue
            try:
                lost = await self.queue.renew(leases)
            except Exception as exc:
                await asyncio.sleep(
                    self.health.failed(
                        "leases", exc, "running handlers go on; if it lasts longer than a lease, their events run twice"
                    )
                )
                continue
            self.health.recovered("leases")
            for delivery in lost:
                # Not settled a moment ago: a renewal that reached the store just after the run's ack finds
                # no lease, and is no news.
                if delivery.id in self._leases and delivery.id not in self._settling:
                    log.warning(
                        "the lease of a run of %s ran out before it could be renewed; another worker may run it too",
                        delivery.step,
                        extra={"trace_id": delivery.event.trace_id, "step": delivery.step},
                    )

    async def _read_stopped(self) -> None:
        # Once a second at most: stopping is a person's act, and another process (the CLI) may do it.
        now = self.clock.time()
        if now - self._stopped_read >= 1.0:
            self._stopped = set(await self.control.get_group(STOPPED_TRACES))
            self._stopped_read = now
        # Cancellations, likewise, on the machine's own time (a person's second is not a test clock's).
        if time.monotonic() - self._cancels_read >= 1.0:
            self._cancels_read = time.monotonic()
            self._cancels = await self.control.get_group(CANCEL)
            for run_id, asked in list(self._cancels.items()):
                # A mark no engine acted on (its run finished as it was asked) goes after a day.
                if not isinstance(asked, dict) or float(asked.get("at", 0)) < self.clock.time() - 86400:
                    del self._cancels[run_id]
                    await self.control.delete(CANCEL, run_id)
            if self._cancels:
                for task, delivery_id in list(self._inflight.items()):
                    if delivery_id in self._cancels and delivery_id not in self._cancelling:
                        self._cancelling.add(delivery_id)
                        task.cancel()

    async def _still_stopped(self, trace_id: str) -> bool:
        """Marks are read once a second; before a delivery is dead-lettered for one, its mark is read again,
        so that a resumed trace's replay (a second after the resume, or at once) is never stopped anew."""
        try:
            if await stopped(self.control, trace_id):
                return True
        except StoreError:
            return True  # the mark as last read stands; the dead letter waits for the store like any outcome
        self._stopped.discard(trace_id)
        return False

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._leases.pop(self._inflight.pop(task, ""), None)
        self._activity.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task crashed", exc_info=task.exception())

    async def _deliver(self, delivery: Delivery) -> None:
        if delivery.step == WAITS_STEP:
            await self._offer(delivery)
            return
        found = self.project.steps.get(delivery.step)
        # (isinstance and a cast rather than Step.of: this is run for every delivery)
        step = (
            cast(Delivered, found) if found is not None and isinstance(found.config, EventConfig | CronConfig) else None
        )
        if step is None:
            # The step went away in a reload after the delivery was claimed: keep it for later.
            await self._settle(
                partial(self.queue.retry, delivery, 1.0, f"step {delivery.step!r} is not loaded"), delivery
            )
            return
        config = step.config
        event = delivery.event
        info = {"delivery_id": delivery.id, "event_id": event.id, "topic": event.topic, "attempt": delivery.attempt}
        run = Run(
            delivery=delivery,
            step=step.name,
            code=step.code_hash,
            control=self.control,
            queue=self.queue,
            clock=self.clock,
            record=self.record,
            waited=self._waited,
            limits=self._journal_limits.get(step.name) or _limits_of(step),
            lookback=self._waits.lookback,
        )
        if event.trace_id in self._stopped and await self._still_stopped(event.trace_id):
            # Kept, not dropped: `stepline traces resume` and a replay run it after all.
            await self._dead_letter(delivery, "the trace was stopped by a person (stepline traces stop)", None, run)
            return
        if delivery.id in self._cancels or (delivery.resumed and await self._cancel_asked(delivery.id)):
            await self._cancelled(step, delivery, run, info)
            return
        if delivery.lost:
            error = f"attempt {delivery.attempt - 1} did not finish: {LOST_ATTEMPT}"
            attempts = config.infrastructure.queue.max_retries + 1
            if delivery.attempt > attempts:
                # The lost attempt was the last: running it again would break maxRetries (and a handler that
                # kills its worker would be redelivered for ever).
                await self._dead_letter(
                    delivery, f"the worker died during the run, on the last of {attempts} attempts: {error}", None, run
                )
                return
            self.record(
                tr.retry(event.trace_id, step.name, self.clock.time(), delivery.id, delivery.attempt - 1, 0, error)
            )
            log.warning("%s; running it again", error, extra={"trace_id": event.trace_id, "step": step.name})
        data = event.data
        if isinstance(config, EventConfig) and config.input is not None:
            try:
                data = config.input.validate(event.data, f"the input of step {step.name!r}")
            except SchemaValidationError as exc:
                # Retrying cannot fix the data: record why, and dead-letter it where it can be replayed.
                self.record(
                    tr.end(
                        event.trace_id,
                        step.name,
                        self.clock.time(),
                        info,
                        "error",
                        0.0,
                        error=clip(str(exc)),
                        errors=[e.to_dict() for e in exc.errors[:MAX_ERRORS]],
                    )
                )
                log.error("%s; not handled", clip(str(exc)), extra={"trace_id": event.trace_id, "step": step.name})
                await self._dead_letter(delivery, clip(str(exc)), None, run)
                return
        try:
            if delivery.attempt != 1 or delivery.resumed:
                await run.load()  # before the handler: the code-change rule may stop it from running at all
        except CodeChangedError as exc:
            log.error("%s", exc, extra={"trace_id": event.trace_id, "step": step.name})
            await self._dead_letter(delivery, str(exc), None, run)
            return
        except StoreUnavailableError as exc:
            await self._store_failed(step, delivery, exc, run)
            return
        ctx = self.context(step, event.trace_id, delivery.id, run)
        timeout = config.infrastructure.handler.timeout
        args = (data,) if isinstance(config, EventConfig) else ()
        try:
            async with asyncio.timeout(timeout):
                await self._traced(step, event.trace_id, info, self.call(step, ctx, *args), timeout)
            if run.suspending is not None:
                raise _Swallowed()
        except Suspended as signal:
            await self._suspend(step, delivery, run, signal)
        except TimeoutError:
            await self._failed(step, delivery, f"timed out after {timeout:g}s", None, run)
        except _Overran as exc:
            await self._failed(step, delivery, str(exc), None, run)
        except asyncio.CancelledError:
            if delivery.id not in self._cancelling:
                raise  # shutting down: the lease expires and the delivery runs again
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._cancelled(step, delivery, run, info)
        except StoreUnavailableError as exc:
            await self._store_failed(step, delivery, exc, run)
        except Exception as exc:
            await self._failed(step, delivery, clip(_describe(exc)), clip(traceback.format_exc(), tail=True), run)
        else:
            self._settling.add(delivery.id)
            try:
                await self.queue.ack(delivery)
                self._leases.pop(delivery.id, None)
            except StoreError:
                await self._settle(partial(self.queue.ack, delivery), delivery)
            finally:
                self._settling.discard(delivery.id)
            if run.journaled:
                await self._finish(run)
            if self.health.failing:
                self.health.recovered("runs")

    async def _finish(self, run: Run) -> None:
        """A run is over: its journal goes. After its ack, never before (a crash between the two would run it
        again from the top with no journal); a journal left by a crash in between is only data."""
        try:
            await run.finish()
        except StoreError as exc:
            log.warning("the journal of finished run %s could not be removed: %s", run.id, exc)

    async def _suspend(self, step: Delivered, delivery: Delivery, run: Run, signal: Suspended) -> None:
        """The run waits: its journal is written, and its delivery goes back to the queue until its time (or
        a matching event, which wakes it), holding no worker slot meanwhile."""
        run.suspending = None

        async def outcome() -> None:
            await run.before_suspend(signal.waiting)
            await self.queue.suspend(delivery, signal.until)

        try:
            await self._settle(outcome, delivery)
        except JournalLimitError as exc:  # its emits since the last write do not fit: it fails, as a step would
            await self._failed(step, delivery, clip(str(exc)), None, run)

    async def _cancel_asked(self, run_id: str) -> bool:
        try:
            asked = await self.control.get(CANCEL, run_id)
        except StoreError:
            return False
        if asked is not None:
            self._cancels[run_id] = asked
        return asked is not None

    async def _cancelled(self, step: Delivered, delivery: Delivery, run: Run, info: dict[str, Any]) -> None:
        """A person cancelled the run: it ends here, in the trace as cancelled, and its journal goes."""
        self._cancelling.discard(delivery.id)
        asked = self._cancels.pop(delivery.id, None) or {}
        reason = asked.get("reason") if isinstance(asked, dict) else None
        message = "the run was cancelled by a person" + (f": {reason}" if reason else "")
        now = self.clock.time()
        self.record(tr.end(delivery.event.trace_id, step.name, now, info, "cancelled", 0.0, error=message))
        log.warning("%s", message, extra={"trace_id": delivery.event.trace_id, "step": step.name})
        await self._settle(partial(self.queue.ack, delivery), delivery)
        run.journaled = True  # its journal, if any, and the cancellation mark both go
        await self._finish(run)

    async def _offer(self, delivery: Delivery) -> None:
        """The internal delivery of an event on a waited-for topic: to the waits that match it."""
        try:
            await self._waits.offer(delivery.event)
        except StoreError as exc:
            await self._settle(partial(self.queue.retry, delivery, 0.5, str(exc), counts=False), delivery)
            return
        except Exception as exc:  # a bug here must not lose the event for its waits: it is tried again
            log.error("an event could not be offered to the waits", exc_info=exc)
            await self._settle(partial(self.queue.retry, delivery, 1.0, str(exc), counts=False), delivery)
            return
        await self._settle(partial(self.queue.ack, delivery), delivery)

    async def _store_failed(
        self, step: Delivered, delivery: Delivery, exc: StoreUnavailableError, run: Run | None = None
    ) -> None:
        """The store failed the run (a full disk, a lock held elsewhere), not the handler: it runs again
        after a pause, and the attempt does not count, so that an outage never dead-letters work."""
        self.health.failed("runs", exc, "runs that need the store wait, their attempts not counted")
        await self._retry(step, delivery, clip(str(exc)), counts=False, run=run)

    async def _settle(self, outcome: Callable[[], Awaitable[None]], delivery: Delivery) -> None:
        """Record a run's outcome (ack, retry, dead letter), however long the store takes to accept it: the
        lease is renewed meanwhile, so the run is not handed out again, and nothing is lost."""
        self._settling.add(delivery.id)
        try:
            await self._settle_now(outcome, delivery)
        finally:
            self._settling.discard(delivery.id)

    async def _settle_now(self, outcome: Callable[[], Awaitable[None]], delivery: Delivery) -> None:
        while True:
            try:
                await outcome()
                self._leases.pop(delivery.id, None)  # settled: no lease to renew
            except StoreError as exc:
                if not self._running:
                    raise  # shutting down: the lease runs out and the delivery runs again
                await asyncio.sleep(
                    self.health.failed("outcomes", exc, "finished runs wait to be recorded; none runs twice")
                )
                continue
            self.health.recovered("outcomes")
            return

    async def _failed(self, step: Delivered, delivery: Delivery, error: str, tb: str | None, run: Run) -> None:
        if delivery.attempt <= step.config.infrastructure.queue.max_retries:
            await self._retry(step, delivery, error, run=run)
        else:
            await self._dead_letter(delivery, error, tb, run)

    async def _retry(
        self, step: Delivered, delivery: Delivery, error: str, counts: bool = True, run: Run | None = None
    ) -> None:
        """Back to the queue after the step's backoff, the retry in the trace (`counted` when it does not count)."""
        delay = step.config.infrastructure.queue.backoff.delay(delivery.attempt, self._rand())
        now = self.clock.time()
        self.record(
            tr.retry(
                delivery.event.trace_id, step.name, now, delivery.id, delivery.attempt, round(delay, 3), error, counts
            )
        )

        async def outcome() -> None:
            if run is not None:  # what the run did stays done: its next execution does not do it again
                await run.before_retry()
            await self.queue.retry(delivery, delay, error, counts=counts)

        await self._settle(outcome, delivery)

    async def _dead_letter(self, delivery: Delivery, error: str, tb: str | None, run: Run | None = None) -> None:
        self.record(
            tr.dead_letter(
                delivery.event.trace_id, delivery.step, self.clock.time(), delivery.id, delivery.attempt, error
            )
        )
        await self._settle(partial(self.queue.dead_letter, delivery, error, tb), delivery)
        if run is not None and (run.journaled or not (delivery.attempt == 1 and not delivery.resumed)):
            # A replay starts the run afresh. (A retried run may have a journal this execution did not read.)
            run.journaled = True
            await self._finish(run)


class _Swallowed(Exception):
    def __init__(self) -> None:
        super().__init__(
            "the handler caught the suspension of a ctx.sleep or ctx.wait_for (an `except BaseException:` or a bare "
            "`except:`) and returned: let stepline.Suspended pass, or catch Exception instead"
        )


class _Overran(Exception):
    """A handler that finished, but past its timeout (it never gave the loop a chance to cancel it): it
    failed as a timeout."""

    def __init__(self, timeout: float, took: float, where: str | None) -> None:
        at = f" at {where}" if where else ""
        super().__init__(
            f"timed out after {timeout:g}s: it ran {took:.1f} s without yielding to the event loop{at}, so the "
            f"timeout could not stop it; {BLOCKING_ADVICE}"
        )


def _run_of(stack: list[FrameType]) -> tuple[str, str, str | None] | None:
    """The step, trace and delivery of the innermost run on the blocked loop's stack (innermost first): read
    from the frame of its `_traced`, so that no run pays to be named; only the watchdog looks, when it must."""
    for frame in stack:
        if frame.f_code is _TRACED:
            local = frame.f_locals
            info = local.get("info") or {}
            return local["step"].name, local["trace_id"], info.get("delivery_id")
    return None


_TRACED = Engine._traced.__code__


def _backlog_limits(project: Project) -> dict[str, list[tuple[str, int]]]:
    """topic -> its subscribers that have a `maxBacklog`, with it (most projects have none)."""
    limits: dict[str, list[tuple[str, int]]] = {}
    for step in project.steps.values():
        config = step.config
        if isinstance(config, EventConfig) and config.infrastructure.queue.max_backlog is not None:
            for topic in config.subscribes:
                limits.setdefault(topic, []).append((step.name, config.infrastructure.queue.max_backlog))
    return limits


def _claim_specs(project: Project) -> dict[str, ClaimSpec]:
    specs: dict[str, ClaimSpec] = {}
    steps: list[Delivered] = [*project.event_steps, *project.cron_steps]
    for step in steps:
        config = step.config
        infra = config.infrastructure
        specs[step.name] = ClaimSpec(_lease_of(config), infra.queue.type == "fifo", infra.handler.concurrency)
    if project.waited_topics:
        specs[WAITS_STEP] = ClaimSpec(_WAITS_LEASE)
    return specs


def _limits_of(step: Delivered) -> Limits:
    durable = step.config.infrastructure.durable
    return Limits(durable.max_entries, durable.max_result_bytes, durable.on_code_change)


def _journal_limits(project: Project) -> dict[str, Limits]:
    """Each delivered step's journal limits, made once per project (a delivery only looks its step's up)."""
    steps: list[Delivered] = [*project.event_steps, *project.cron_steps]
    return {step.name: _limits_of(step) for step in steps}


def _lease_of(config: EventConfig | CronConfig) -> float:
    infra = config.infrastructure
    return infra.queue.visibility_timeout or infra.handler.timeout + _LEASE_MARGIN


def _delay_of(step: Step) -> float:
    config = step.config
    return config.infrastructure.queue.delay_seconds if isinstance(config, EventConfig) else 0.0


def _in_run(record: Recorder, delivery_id: str, r: TraceRecord) -> None:
    r.data.setdefault("delivery_id", delivery_id)
    record(r)


def clip(text: str, limit: int = _TRACE_TEXT_LIMIT, tail: bool = False) -> str:
    """Text for a trace record or an error message, cut to `limit` characters with a marker saying so.
    `tail` keeps the end (of a traceback: where it was raised)."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"[{cut} characters cut] ...{text[-limit:]}" if tail else f"{text[:limit]}... [{cut} characters cut]"


def clipped(raw: bytes) -> dict[str, Any]:
    """What a trace keeps of event data too large to store whole: its size and its start."""
    return {"_truncated": f"{len(raw)} bytes, cut in the trace", "start": raw[:1024].decode(errors="replace")}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, _Overran):  # Stepline's own verdict, not an exception the handler raised
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
