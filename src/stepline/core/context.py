"""What a handler gets as `ctx`, as the engine knows it: emit, state, logger, trace id and flows.

A sync handler gets the same API with blocking methods (`SyncRunContext`): it runs on a worker thread,
and each call runs on the engine's loop. The agent features built on it (`ctx.llm`, `ctx.approvals`,
`ctx.run_code`) are in `stepline.context`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from stepline import _json
from stepline._clock import SYSTEM_CLOCK, Clock
from stepline._errors import DurableError, EngineStoppedError
from stepline.adapters.base import CompareAndSet, Event, Increment, Merge, StateStore, TraceRecord
from stepline.core import trace as tr
from stepline.core.durable import Run, until_of

if TYPE_CHECKING:
    from stepline.steps.config import ApiConfig
    from stepline.steps.project import Project, Step
    from stepline.steps.request import ApiRequest

log = logging.getLogger("stepline.step")
T = TypeVar("T")


class Recorder(Protocol):
    def __call__(self, record: TraceRecord) -> None: ...


class Emitter(Protocol):
    def __call__(
        self,
        step: str | None,
        trace_id: str,
        topic: str,
        data: Any,
        message_group_id: str | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> Awaitable[Event]: ...


class StepLogger:
    """Structured logs that carry the trace id and the step name, to the console and into the trace.

    The second argument may be any value, as in Motia: a dict (or any mapping) is the line's fields, a
    Pydantic model its `model_dump(mode="json")`, anything else one field, `value`. A log call never raises
    over what it is given: the trace stores JSON, so what is not JSON is stored as its `repr`."""

    def __init__(self, record: Recorder, trace_id: str, step: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._record = record
        self.trace_id = trace_id
        self.step = step
        self._clock = clock

    def _log(self, level: int, name: str, message: Any, value: Any, kw: dict[str, Any]) -> None:
        data = self._fields(value, kw)
        text = message if isinstance(message, str) else self._str(message)
        self._record(tr.log(self.trace_id, self.step, self._clock.time(), name, text, data))
        if log.isEnabledFor(level):
            log.log(level, text, extra={"trace_id": self.trace_id, "step": self.step, "fields": data})

    def debug(self, message: str, fields: Any = None, **kw: Any) -> None:
        self._log(logging.DEBUG, "debug", message, fields, kw)

    def info(self, message: str, fields: Any = None, **kw: Any) -> None:
        self._log(logging.INFO, "info", message, fields, kw)

    def warn(self, message: str, fields: Any = None, **kw: Any) -> None:
        self._log(logging.WARNING, "warn", message, fields, kw)

    warning = warn

    def error(self, message: str, fields: Any = None, **kw: Any) -> None:
        self._log(logging.ERROR, "error", message, fields, kw)

    @classmethod
    def _fields(cls, value: Any, kw: dict[str, Any]) -> dict[str, Any]:
        """A line's fields as plain JSON, copied (a handler changing its dict afterwards changes nothing logged)."""
        from collections.abc import Mapping

        from pydantic import BaseModel

        try:
            if isinstance(value, BaseModel):
                value = cls._to_json(value)
            fields: dict[Any, Any] = (
                {} if value is None else dict(value) if isinstance(value, Mapping) else {"value": value}
            )
        except Exception:  # a mapping that cannot be read
            fields = {"value": cls._repr(value)}
        fields.update(kw)
        try:
            plain: dict[str, Any] = cls._plain(fields)
            return plain
        except Exception:
            # One bad value must not cost the line its other fields, nor (the trace is written in
            # batches) the records logged next to it.
            return {k if isinstance(k, str) else cls._repr(k): cls._plain_or_repr(v) for k, v in fields.items()}

    @classmethod
    def _plain(cls, value: Any) -> Any:
        import orjson

        return orjson.loads(orjson.dumps(value, default=cls._to_json, option=orjson.OPT_NON_STR_KEYS))

    @classmethod
    def _plain_or_repr(cls, value: Any) -> Any:
        try:
            return cls._plain(value)
        except Exception:
            return cls._repr(value)

    @classmethod
    def _to_json(cls, value: Any) -> Any:
        """What orjson cannot encode itself: a model's JSON dump, a set as a list, anything else its repr."""
        from pydantic import BaseModel

        if isinstance(value, BaseModel):
            try:
                return value.model_dump(mode="json")
            except Exception:  # a field with no JSON form
                return cls._repr(value)
        if isinstance(value, set | frozenset):
            return list(value)
        return cls._repr(value)

    @classmethod
    def _str(cls, value: Any) -> str:
        try:
            return str(value)
        except Exception:
            return cls._repr(value)

    @staticmethod
    def _repr(value: Any) -> str:
        try:
            return repr(value)
        except Exception:
            return f"<{type(value).__name__} object>"


class State:
    """`ctx.state`: JSON values by (group, key), every change recorded in the trace."""

    def __init__(
        self, store: StateStore, record: Recorder, trace_id: str, step: str, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._store = store
        self._record = record
        self._trace_id = trace_id
        self._step = step
        self._clock = clock

    def _note(self, op: str, group: str, key: str | None = None) -> None:
        self._record(tr.state(self._trace_id, self._step, self._clock.time(), op, group, key))

    async def get(self, group: str, key: str) -> Any:
        return await self._store.get(group, key)

    async def set(self, group: str, key: str, value: Any) -> Any:
        _check_key(group, key)
        await self._store.set(group, key, value)
        self._note("set", group, key)
        return value

    async def increment(self, group: str, key: str, by: int | float = 1) -> int | float:
        """Add `by` atomically (a missing key counts as 0); returns the new value."""
        _check_key(group, key)
        result = await self._store.update(group, key, Increment(by))
        self._note("increment", group, key)
        value: int | float = result.value
        return value

    async def merge(self, group: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Shallow-merge `fields` into a dict atomically (a missing key counts as {}); returns the new dict."""
        _check_key(group, key)
        result = await self._store.update(group, key, Merge(_json.copy(fields, f"state value {group}/{key}")))
        self._note("merge", group, key)
        merged: dict[str, Any] = result.value
        return merged

    async def compare_and_set(self, group: str, key: str, expected: Any, new: Any) -> bool:
        """Set `new` only if the value is `expected` (None: the key is missing); True if it was set."""
        _check_key(group, key)
        result = await self._store.update(group, key, CompareAndSet(expected, _json.copy(new)))
        if result.applied:
            self._note("set", group, key)
        return result.applied

    async def delete(self, group: str, key: str) -> bool:
        existed = await self._store.delete(group, key)
        if existed:
            self._note("delete", group, key)
        return existed

    async def get_group(self, group: str) -> list[Any]:
        """The values of a group, in key order (the keys themselves: `items`)."""
        items = await self._store.get_group(group)
        return [items[k] for k in sorted(items)]

    async def items(self, group: str) -> dict[str, Any]:
        return await self._store.get_group(group)

    async def clear(self, group: str) -> int:
        removed = await self._store.clear(group)
        self._note("clear", group)
        return removed


def _check_key(group: Any, key: Any) -> None:
    if not isinstance(group, str) or not group or not isinstance(key, str) or not key:
        raise ValueError(f"state group and key must be non-empty strings, got {group!r} and {key!r}")


class StepCaller(Protocol):
    """What calls a project's API steps from inside a run (a tool that is a step): the engine, injected."""

    @property
    def project(self) -> Project: ...

    async def call_api(self, step: Step[ApiConfig], request: ApiRequest, trace_id: str | None = None) -> Any: ...


def _untraced(record: TraceRecord) -> None:
    pass


class ContextFactory(Protocol):
    """Makes a handler's `ctx` from its parts: `RunContext` itself, or the app's, which adds the agent
    features (`stepline.context.Context`)."""

    def __call__(
        self,
        *,
        step: str,
        trace_id: str,
        flows: list[str],
        emitter: Emitter,
        state: State,
        control: StateStore,
        logger: StepLogger,
        record: Recorder,
        clock: Clock,
        run: Run | None = None,
    ) -> RunContext: ...


_NO_SUSPEND = (
    "an API step cannot suspend: its caller is waiting for the response. Emit an event instead, and "
    "sleep or wait_for in the event step that subscribes to it (docs/durable.md)"
)


class RunContext:
    """What every handler gets as `ctx`: emit, state, logger, its trace and step, and the durable calls
    (`ctx.step`, `ctx.sleep`, `ctx.wait_for`). The agent features (`ctx.llm`, `ctx.approvals`,
    `ctx.run_code`) are `stepline.context.Context`'s, which the app gives handlers; the engine knows only this."""

    def __init__(
        self,
        *,
        step: str,
        trace_id: str,
        flows: list[str],
        emitter: Emitter,
        state: State,
        control: StateStore,
        logger: StepLogger,
        record: Recorder,
        clock: Clock = SYSTEM_CLOCK,
        run: Run | None = None,
    ) -> None:
        self.step_name = step
        self.trace_id = trace_id
        self.flows = flows
        self.state = state
        self._control_store = control
        self._control: State | None = None
        self.logger = logger
        self._emitter = emitter
        self._record = record
        # The runtime's clock (stepline._clock): what the agent features stamp and time out by.
        self.clock = clock
        # The journal of this delivery's run (None in an API request: it has no run, and cannot suspend).
        self.run = run

    @property
    def run_id(self) -> str | None:
        """This run's id (the delivery's): the same across its retries and resumes. None in an API step."""
        return self.run.id if self.run is not None else None

    def idempotency_key(self, name: str) -> str:
        """A key for an outside API's idempotency (Stripe's Idempotency-Key): the same in every execution of
        this run, so that a step re-run after a crash asks the outside service for the same thing."""
        return f"{self.run.id if self.run is not None else self.trace_id}:{name}"

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` (sync or async) once per run: its result (JSON, or a Pydantic model) is
        recorded, and when the handler runs again (a retry, a resume) the recorded result is returned, or the
        recorded failure raised, instead of running `fn` again. In an API step it simply runs `fn`."""
        if self.run is None:
            result = fn(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result
        return await self.run.step(name, fn, args, kwargs)

    async def sleep(self, seconds: float, *, name: str | None = None) -> None:
        """Suspend this run for `seconds`: its worker slot is freed, and it resumes (from the top, its journal
        replayed) on any worker, across restarts."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds != seconds:
            raise DurableError(f"sleep takes seconds as a number, not {seconds!r}")
        await self.sleep_until(self.clock.time() + max(0.0, float(seconds)), name=name)

    async def sleep_until(self, when: float | datetime, *, name: str | None = None) -> None:
        """Suspend this run until `when` (a datetime, or a Unix time)."""
        if self.run is None:
            raise DurableError(_NO_SUSPEND)
        await self.run.sleep_until(until_of(when), name)

    async def wait_for(
        self, topic: str, match: dict[str, Any] | None = None, *, timeout: float | None = None, name: str | None = None
    ) -> Any:
        """Suspend until an event on `topic` whose data contains `match` is published, and return its data;
        after `timeout` seconds raise WaitTimeoutError. Events published after the event that started this run
        count, also those that came before this line ran (docs/durable.md); the step lists `topic` in its
        config's `waitsFor`."""
        if self.run is None:
            raise DurableError(_NO_SUSPEND)
        return await self.run.wait_for(topic, match, timeout, name)

    @property
    def control(self) -> State:
        """Stepline's own records in this run's store (approvals, conversations): not the user's state, and
        not traced as its changes (the features that keep them trace what they do in their own words).
        Made when first asked for: most runs never do."""
        if self._control is None:
            self._control = State(self._control_store, _untraced, self.trace_id, self.step_name, self.clock)
        return self._control

    def sync(self, loop: asyncio.AbstractEventLoop) -> SyncRunContext:
        """The same context with blocking methods, for a sync handler on a thread of its own."""

        return SyncRunContext(self, loop)

    async def emit(
        self,
        event: dict[str, Any] | str,
        data: Any = None,
        *,
        message_group_id: str | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        """`await ctx.emit({"topic": "t", "data": {...}})`, or `await ctx.emit("t", {...})`.

        `messageGroupId` orders the event within its group for FIFO subscribers; `delay` (seconds) holds
        it back; `idempotencyKey` makes a repeated emit with the same key count once."""
        if isinstance(event, dict):
            unknown = set(event) - _EMIT_KEYS
            if "topic" not in event or unknown:
                raise TypeError(
                    f"emit takes a dict with keys {sorted(_EMIT_KEYS)} (topic required); got {sorted(event)}"
                )
            topic = event["topic"]
            data = event.get("data")
            message_group_id = event.get("messageGroupId", message_group_id)
            delay = event.get("delay", delay)
            idempotency_key = event.get("idempotencyKey", idempotency_key)
        else:
            topic = event
        # `trace_id` continues another trace: an approval's decision goes out in the trace that asked for it.
        send = partial(
            self._emitter,
            self.step_name,
            trace_id or self.trace_id,
            topic,
            data,
            message_group_id,
            delay,
            idempotency_key,
        )
        run = self.run
        if run is None:
            await send()
        elif run.blank:  # nothing recorded yet (a first attempt): just note it
            run.noted(topic, await send())
        else:  # once per run: an execution after a retry or a resume does not emit again what one before did
            await run.emit(topic, None, send)


_EMIT_KEYS = frozenset({"topic", "data", "messageGroupId", "delay", "idempotencyKey"})
Handler = Callable[..., Any]


# -- sync handlers ------------------------------------------------------------------------------------


class Blocking:
    """Runs a coroutine on the engine's loop from another thread and waits for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: the handler outlived its engine (a timeout abandoned it)
            coro.close()
            raise EngineStoppedError() from None
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if not self._loop.is_running():  # it will never run: do not hang this thread for ever
                    future.cancel()
                    raise EngineStoppedError() from None


class SyncState(Blocking):
    def __init__(self, state: State, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._state = state

    def get(self, group: str, key: str) -> Any:
        return self._run(self._state.get(group, key))

    def set(self, group: str, key: str, value: Any) -> Any:
        return self._run(self._state.set(group, key, value))

    def increment(self, group: str, key: str, by: int | float = 1) -> int | float:
        return self._run(self._state.increment(group, key, by))

    def merge(self, group: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._run(self._state.merge(group, key, fields))

    def compare_and_set(self, group: str, key: str, expected: Any, new: Any) -> bool:
        return self._run(self._state.compare_and_set(group, key, expected, new))

    def delete(self, group: str, key: str) -> bool:
        return self._run(self._state.delete(group, key))

    def get_group(self, group: str) -> list[Any]:
        return self._run(self._state.get_group(group))

    def items(self, group: str) -> dict[str, Any]:
        return self._run(self._state.items(group))

    def clear(self, group: str) -> int:
        return self._run(self._state.clear(group))


class SyncRunContext(Blocking):
    def __init__(self, ctx: RunContext, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._ctx = ctx
        self.step_name = ctx.step_name
        self.trace_id = ctx.trace_id
        self.flows = ctx.flows
        self.logger = ctx.logger
        self.state = SyncState(ctx.state, loop)

    def emit(
        self,
        event: dict[str, Any] | str,
        data: Any = None,
        *,
        message_group_id: str | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> None:
        self._run(
            self._ctx.emit(event, data, message_group_id=message_group_id, delay=delay, idempotency_key=idempotency_key)
        )

    @property
    def run_id(self) -> str | None:
        return self._ctx.run_id

    def idempotency_key(self, name: str) -> str:
        return self._ctx.idempotency_key(name)

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._run(self._ctx.step(name, fn, *args, **kwargs))

    def sleep(self, seconds: float, *, name: str | None = None) -> None:
        self._run(self._ctx.sleep(seconds, name=name))

    def sleep_until(self, when: float | datetime, *, name: str | None = None) -> None:
        self._run(self._ctx.sleep_until(when, name=name))

    def wait_for(
        self, topic: str, match: dict[str, Any] | None = None, *, timeout: float | None = None, name: str | None = None
    ) -> Any:
        return self._run(self._ctx.wait_for(topic, match, timeout=timeout, name=name))
