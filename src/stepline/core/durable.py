"""Durable handlers: a run's journal, and what `ctx.step`, `ctx.sleep`, `ctx.wait_for` and a run's emits
do with it (docs/durable.md).

A *run* is one delivery of one event (or cron tick) to one step; its id is the delivery's, the same across
retries, crashes and resumes. A handler that suspends (a sleep, a wait) is not kept waiting in memory: it
lets go of its worker slot, and when its time (or its event) comes it runs again *from the top*. What it
did before is in its journal, keyed by name: `ctx.step("charge", ...)` finds the result it recorded and
returns it instead of charging again, an emit made before is not made again, a sleep that is over returns.

Nothing here replays arbitrary code or asks it to be deterministic: a journal key is a name (or, for calls
without one, the kind and its ordinal in the execution, "#emit.0"), so adding, removing or changing steps
between executions behaves as a reader of the code expects: a new name runs, a missing one is not asked for.

The records are Stepline's own (the store's `control` state), in these groups:

    runs                run id -> the run's record: step, trace, status, what it waits for, its code's hash
    journal:<run>       key -> entry: a step's result or failure, a sleep's end, a wait and its outcome, an emit
    shapes:<topic>      shape -> its key paths: the shapes of the matches waits on the topic use
    waits:<topic>:<h>   "<run> <key>" -> a pending wait_for: its match, since when, until when. <h> hashes the
                        match's shape and values, so that an event finds the waits it may satisfy by looking
                        up one group per shape (its own values at those paths), not by reading every wait
    log:<topic>:<hour>  event id -> {at, data}: the events on a topic some step waits for, a group per hour
                        (a wait reads the hours since its run began), kept `lookback` seconds
    logs:<topic>        hour -> 1: the hours that have a log group, for pruning
    cancel              run id -> {at, reason}: cancellations asked for, until the run's engine acts on them

The early-event rule: a wait sees every matching event published on its topic *after the event that started
the run*, also those that came before the wait line ran; never older ones; each event satisfies at most one
wait of a run, oldest first. It holds without a transaction across groups: a wait writes its waiter and
then reads the topic's log, an event is written to the log and then the waiters are read, so one of the two
always sees the other (each store's operations are atomic and ordered).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from stepline import _json
from stepline._clock import Clock
from stepline._errors import (
    CodeChangedError,
    DurableError,
    JournalLimitError,
    NotJSONError,
    RecordedStepError,
    StepNameError,
    Suspended,
    WaitTimeoutError,
)
from stepline.adapters.base import CompareAndSet, Delivery, Event, EventQueue, StateStore, TraceRecord

# How a run records into its trace (core.context's Recorder; named here so that context may import this).
Recorder = Callable[[TraceRecord], None]
log = logging.getLogger("stepline.durable")

RUNS = "runs"
JOURNAL = "journal:"
WAITS = "waits:"
SHAPES = "shapes:"
LOG = "log:"
LOGS = "logs:"
_HOUR = 3600.0
_ANY = "*"  # the shape of a wait that matches every event (no match), or one that cannot be indexed
CANCEL = "cancel"
# The internal step that delivers the events of waited-for topics to their waits (see Engine.emit).
WAITS_STEP = "stepline:waits"
OnCodeChange = Literal["continue", "dead_letter"]


@dataclass(frozen=True)
class Limits:
    """A run's journal limits, from its step's `infrastructure.durable` (see steps/config.py)."""

    max_entries: int = 1000
    max_result_bytes: int = 1024 * 1024
    on_code_change: OnCodeChange = "continue"


def matches(match: Mapping[str, Any] | None, data: Any) -> bool:
    """`match` is a subset of `data`: every key of it is in data with an equal value; nested dicts match the
    same way (pgmq's `@>`). None matches anything."""
    if match is None:
        return True
    if not isinstance(data, dict):
        return False
    for key, want in match.items():
        if key not in data:
            return False
        have = data[key]
        if isinstance(want, dict):
            if not matches(want, have):
                return False
        elif have != want or isinstance(have, bool) != isinstance(want, bool):
            return False
    return True


async def resolve(control: StateStore, run_id: str, key: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """Settle the wait `key` of a run with `outcome` (an event, a timeout, a cancellation), unless it was
    settled already; returns the outcome that stands (first write wins)."""
    result = await control.update(JOURNAL + run_id, key + "=", CompareAndSet(None, outcome))
    stood: dict[str, Any] = outcome if result.applied else result.value
    return stood


def _waiter_key(run_id: str, key: str) -> str:
    return f"{run_id} {key}"


def _paths(match: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]] | None:
    """The leaves of a match as (key path, value); None when it cannot be indexed (an empty dict in it)."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in match.items():
        if isinstance(value, dict):
            if not value:
                return None
            inner = _paths(value, (*prefix, key))
            if inner is None:
                return None
            out += inner
        else:
            out.append(((*prefix, key), value))
    return sorted(out, key=lambda kv: kv[0])


def _digest(shape: str, values: list[Any]) -> str:
    return hashlib.sha1(shape.encode() + b"\x00" + _json.dumps(values), usedforsecurity=False).hexdigest()[:20]


def shape_of(match: Any) -> tuple[str, list[list[str]], str]:
    """(shape id, its key paths, the waits group) of a match: where a wait on it is kept."""
    paths = _paths(match) if isinstance(match, dict) and match else None
    if paths is None:
        return _ANY, [], _ANY
    keys = [list(path) for path, _ in paths]
    shape = _json.dumps(keys).decode()
    return shape, keys, _digest(shape, [value for _, value in paths])


def _project(data: Any, keys: list[list[str]]) -> list[Any] | None:
    """The values of `data` at the key paths, or None when one is missing."""
    values = []
    for path in keys:
        at = data
        for part in path:
            if not isinstance(at, dict) or part not in at:
                return None
            at = at[part]
        values.append(at)
    return values


def waits_group(topic: str, digest: str) -> str:
    """The group of the waits on `topic` whose match has this shape and these values (see shape_of)."""
    return f"{WAITS}{topic}:{digest}"


def log_group(topic: str, hour: int) -> str:
    """The group of the events on `topic` published in this hour (a Unix time // 3600)."""
    return f"{LOG}{topic}:{hour}"


class Run:
    """The journal of one run, as its handler's `ctx` uses it. Made per execution; the store has the rest.

    Writes are as few as the guarantees allow: a step's result is written when it is known (that is the
    promise of ctx.step); an emit is noted in memory and written with the next write, or when the run
    suspends or fails, so that a run that completes at its first try writes no journal at all."""

    # One is made for every delivery: slots make that a little cheaper.
    __slots__ = (
        "_clock", "_control", "_counts", "_emits", "_entries", "_lookback", "_meta", "_pending", "_queue", "_record",
        "_used", "_waited", "code", "delivery", "id", "journaled", "limits", "since", "step_name", "suspending",
    )  # fmt: skip

    def __init__(
        self,
        *,
        delivery: Delivery,
        step: str,
        code: str,
        control: StateStore,
        queue: EventQueue,
        clock: Clock,
        record: Recorder,
        waited: frozenset[str],
        limits: Limits = Limits(),
        lookback: float = 7 * 86400.0,
    ) -> None:
        self.id = delivery.id
        self._lookback = lookback
        self.delivery = delivery  # (its trace records carry the delivery id, as the engine's run records do)
        self.step_name = step
        self.code = code
        self._control = control
        self._queue = queue
        self._clock = clock
        self._record = record
        self._waited = waited
        self.limits = limits
        self.since = delivery.event.created_at  # a wait sees events published after the run's own
        # A first attempt that was never suspended has no journal: nothing to read.
        fresh = delivery.attempt == 1 and not delivery.resumed
        self._entries: dict[str, Any] | None = {} if fresh else None
        self._meta: dict[str, Any] | None = None
        self.journaled = False  # the store holds a journal of this run (read or written)
        self._used: set[str] = set()
        self._counts: dict[str, int] = {}
        self._pending: list[tuple[str, dict[str, Any]]] = []  # entries to write with the next write
        self._emits: list[tuple[int, str, Event]] = []  # emits of a run with no journal yet: (ordinal, topic, event)
        self.suspending: Suspended | None = None  # raised, and not yet seen by the engine

    # -- reading ------------------------------------------------------------------------------------

    async def load(self) -> dict[str, Any]:
        """The journal as the store has it (read once per execution), after the code-change rule."""
        if self._entries is None:
            entries = await self._control.get_group(JOURNAL + self.id)
            meta = await self._control.get(RUNS, self.id)
            self._entries = entries
            self._meta = meta if isinstance(meta, dict) else None
            self.journaled = bool(entries) or self._meta is not None
            await self._check_code()
        return self._entries

    async def _check_code(self) -> None:
        meta = self._meta
        if meta is None or meta.get("code_hash") in (None, self.code):
            return
        was = meta.get("code_hash")
        if self.limits.on_code_change == "dead_letter":
            raise CodeChangedError(
                f"the code of step {self.step_name} changed while its run {self.id} was suspended (it was {was}, it is "
                f"{self.code}), and the step says onCodeChange: dead_letter; replay the dead letter to run it on "
                "the new code from the top"
            )
        message = (
            f"the code of step {self.step_name} changed since this run began (code {was}, now {self.code}): it goes on "
            "from its journal on the new code"
        )
        log.warning(message, extra={"trace_id": self.delivery.event.trace_id, "step": self.step_name})
        self._trace("code_changed", was=was, now=self.code)
        meta["code_hash"] = self.code
        await self._control.set(RUNS, self.id, meta)

    def key(self, kind: str, name: str | None) -> str:
        """The journal key of a call: its name, or its kind and ordinal in this execution ("#sleep.0")."""
        if name is None:
            n = self._counts.get(kind, 0)
            self._counts[kind] = n + 1
            key = f"#{kind}.{n}"
        else:
            if not isinstance(name, str) or not name or name.startswith("#") or name.endswith("="):
                raise StepNameError(
                    f"{name!r} cannot name a {kind} in a run: give a non-empty string that does not start with '#' "
                    "or end with '=' (those are the journal's own)"
                )
            key = name
        if key in self._used:
            raise StepNameError(
                f"the name {key!r} is used twice in one run of step {self.step_name}: each ctx.step (and each named "
                f'sleep, wait or emit) needs its own; in a loop, put the index in it, like f"fetch-{{i}}"'
            )
        self._used.add(key)
        return key

    # -- writing ------------------------------------------------------------------------------------

    async def _write(self, key: str | None = None, entry: dict[str, Any] | None = None) -> None:
        """Write the pending entries, and `entry` under `key` (first write wins: a concurrent execution of
        the same run, after a lease ran out, keeps what was recorded first)."""
        entries = await self.load()
        self._take_emits()
        adding = len(self._pending) + (key is not None and entry is not None)
        if len(entries) + adding > self.limits.max_entries:
            raise JournalLimitError(
                f"run {self.id} of step {self.step_name} would record more than {self.limits.max_entries} journal "
                "entries (steps, sleeps, waits and emits); do big loops in fewer steps (a step may return a list), "
                "or raise infrastructure.durable.maxEntries in the step's config"
            )
        batch, self._pending = self._pending, []
        if key is not None and entry is not None:
            batch.append((key, entry))
        try:
            if self._meta is None:
                await self._set_meta("running")
            for k, e in batch:
                result = await self._control.update(JOURNAL + self.id, k, CompareAndSet(None, e))
                entries[k] = e if result.applied else result.value
        except BaseException:
            self._pending[:0] = [(k, e) for k, e in batch if k not in entries]  # tried again with the next write
            raise
        self.journaled = True

    async def _set_meta(self, status: str, waiting: dict[str, Any] | None = None) -> None:
        now = self._clock.time()
        meta = self._meta or {
            "id": self.id,
            "step": self.step_name,
            "trace_id": self.delivery.event.trace_id,
            "topic": self.delivery.event.topic,
            "code_hash": self.code,
            "started_at": now,
        }
        meta |= {"status": status, "waiting": waiting, "updated_at": now, "entries": len(self._entries or {})}
        await self._control.set(RUNS, self.id, meta)
        self._meta = meta
        self.journaled = True

    async def before_retry(self) -> None:
        """The run failed and runs again: keep what it did (its results, its emits), but not the failure of a
        step that made the handler fail, so that the step is tried again rather than its failure replayed."""
        self._take_emits()
        self._pending = [(k, e) for k, e in self._pending if "error" not in e]
        if self._pending:
            try:
                await self._write()
            except JournalLimitError:
                self._pending = []  # the run fails for it anyway: what does not fit is not kept
        if self._meta is not None:
            await self._set_meta("retrying")

    async def before_suspend(self, waiting: dict[str, Any]) -> None:
        await self._write()
        await self._set_meta("suspended", waiting)

    async def finish(self) -> None:
        """The run is over (done, dead-lettered, cancelled): its journal and waits go."""
        if not self.journaled:
            return
        entries = self._entries or await self._control.get_group(JOURNAL + self.id)
        for key, entry in entries.items():
            if isinstance(entry, dict) and entry.get("kind") == "wait" and not key.endswith("="):
                group = waits_group(str(entry.get("topic")), shape_of(entry.get("match"))[2])
                await self._control.delete(group, _waiter_key(self.id, key))
        await self._control.clear(JOURNAL + self.id)
        await self._control.delete(RUNS, self.id)
        await self._control.delete(CANCEL, self.id)

    # -- ctx.step -----------------------------------------------------------------------------------

    async def step(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not callable(fn):
            raise DurableError(f"ctx.step({name!r}, fn) takes a function to run, not {type(fn).__name__}")
        key = self.key("step", name)
        entries = await self.load()
        found = entries.get(key)
        if found is not None:
            self._skip(found)
            self._trace("step", name=key, replayed=True)
            return _replayed(key, found, fn)
        started = self._clock.time()
        before = dict(self._counts)
        try:
            if inspect.iscoroutinefunction(fn):
                result = await fn(*args, **kwargs)
            else:
                # A plain function may block (requests.get): off the loop, as a sync handler runs.
                result = await asyncio.to_thread(fn, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            # Recorded with the next write: only if the handler goes on past it (it caught it). A failure
            # that fails the run is not kept, so that the retry runs the step again.
            failed = {"kind": "step", "at": started, "error": _failure(exc), **self._inner(before)}
            self._pending.append((key, failed))
            self._trace("step", name=key, status="error", error=f"{type(exc).__name__}: {exc}")
            raise
        entry = self._result(key, result, started) | self._inner(before)
        await self._write(key, entry)
        self._trace("step", name=key, duration_ms=round((self._clock.time() - started) * 1000, 3))
        return result

    def _result(self, key: str, result: Any, started: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": "step", "at": started}
        value = result
        if isinstance(result, BaseModel):
            cls = type(result)
            entry["model"] = f"{cls.__module__}:{cls.__qualname__}"
            value = result.model_dump(mode="json")
        try:
            raw = _json.dumps(value, f"the result of ctx.step {key!r}")
        except NotJSONError as exc:
            raise DurableError(
                f"{exc}; a step's result is recorded as JSON: return a dict, list, str, number, bool, None or a "
                "Pydantic model"
            ) from None
        if len(raw) > self.limits.max_result_bytes:
            raise JournalLimitError(
                f"the result of ctx.step {key!r} is {len(raw):,} bytes as JSON, over the "
                f"{self.limits.max_result_bytes:,} a journal entry may hold: keep large data in state (ctx.state.set) "
                "or a file and return its key, or raise infrastructure.durable.maxResultBytes"
            )
        entry["value"] = _json.loads(raw)
        return entry

    async def memo(
        self,
        kind: str,
        name: str | None,
        fn: Callable[[], Awaitable[Any]],
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
    ) -> tuple[Any, bool]:
        """A call recorded as `encode(result)` and replayed as `decode(value)` (the agent loop's model and
        tool calls); returns (result, replayed)."""
        key = self.key(kind, name)
        entries = await self.load()
        found = entries.get(key)
        if found is not None and "value" in found:
            self._skip(found)
            return decode(found["value"]), True
        before = dict(self._counts)
        result = await fn()
        await self._write(key, {"kind": kind, "at": self._clock.time(), "value": encode(result), **self._inner(before)})
        return result, False

    def _inner(self, before: dict[str, int]) -> dict[str, Any]:
        """The unnamed calls a step made inside it (a tool's emits), by kind: skipped on replay, so that the
        ordinals of the calls after it stay what they were ("#emit.3" is the same emit in every execution)."""
        inner = {k: n - before.get(k, 0) for k, n in self._counts.items() if n > before.get(k, 0)}
        return {"inner": inner} if inner else {}

    def _skip(self, entry: dict[str, Any]) -> None:
        for kind, n in (entry.get("inner") or {}).items():
            self._counts[kind] = self._counts.get(kind, 0) + int(n)

    # -- emits --------------------------------------------------------------------------------------

    def _take_emits(self) -> None:
        if self._emits:
            self._pending += [
                (f"#emit.{n}", {"kind": "emit", "at": event.created_at, "topic": topic, "event": event.id})
                for n, topic, event in self._emits
            ]
            self._emits = []

    @property
    def blank(self) -> bool:
        """The journal is known to be empty (a first attempt, nothing recorded yet): an emit has nothing to
        look up, and is only noted (`noted`), to be written if the run suspends or fails."""
        return self._entries is not None and not self._entries

    def noted(self, topic: str, event: Event) -> None:
        """An emit made by a run whose journal is blank (the common case, on every hop of a flow)."""
        n = self._counts.get("emit", 0)
        self._counts["emit"] = n + 1
        self._emits.append((n, topic, event))

    async def emit(self, topic: str, name: str | None, publish: Callable[[], Awaitable[Event]]) -> bool:
        """Emit once per run: False when an earlier execution emitted this one already."""
        if name is None and self.blank:
            self.noted(topic, await publish())
            return True
        key = self.key("emit", name)
        entries = self._entries if self._entries is not None else await self.load()
        if key in entries:
            return False
        event = await publish()
        self._pending.append((key, {"kind": "emit", "at": event.created_at, "topic": topic, "event": event.id}))
        return True

    # -- sleeping and waiting -----------------------------------------------------------------------

    async def sleep_until(self, when: float, name: str | None) -> None:
        key = self.key("sleep", name)
        entries = await self.load()
        found = entries.get(key)
        if found is None:
            found = {"kind": "sleep", "at": self._clock.time(), "until": when}
            await self._write(key, found)
        until = float(found["until"])
        if self._clock.time() >= until:
            return
        raise self._suspend(until, {"kind": "sleep", "key": key, "until": until})

    async def wait_for(self, topic: str, match: dict[str, Any] | None, timeout: float | None, name: str | None) -> Any:
        if topic not in self._waited:
            raise DurableError(
                f"step {self.step_name} waits for {topic!r}, which its config does not list: add "
                f'"waitsFor": ["{topic}"] (the events of a topic are kept for waits only when a step declares it)'
            )
        if match is not None and not isinstance(match, dict):
            raise DurableError(f"match is a dict of fields the event's data must have, not {type(match).__name__}")
        if timeout is not None and not timeout > 0:
            raise DurableError(f"timeout is in seconds and above 0 (or None for no timeout), not {timeout!r}")
        key = self.key("wait", name)
        entries = await self.load()
        found = entries.get(key)
        now = self._clock.time()
        if found is None:
            found = {
                "kind": "wait",
                "at": now,
                "topic": topic,
                "match": match,
                "until": now + timeout if timeout else None,
            }
            await self._write(key, found)
        until = found.get("until")
        outcome = entries.get(key + "=")
        if outcome is None:
            outcome = await self._look(key, topic, found.get("match"), until)
        if outcome is None:
            raise self._suspend(until, {"kind": "wait", "key": key, "topic": topic, "match": match, "until": until})
        entries[key + "="] = outcome
        if outcome.get("timeout"):
            self._trace("wait", name=key, topic=topic, outcome="timeout")
            raise WaitTimeoutError(topic, found.get("match"), (until or now) - float(found["at"]))
        return outcome.get("data")

    async def _look(self, key: str, topic: str, match: Any, until: float | None) -> dict[str, Any] | None:
        """Register the wait, then look for a matching event in the topic's log (see the module's rule)."""
        waiter = {
            "run": self.id,
            "key": key,
            "step": self.step_name,
            "trace_id": self.delivery.event.trace_id,
            "match": match,
            "since": self.since,
            "until": until,
            "at": self._clock.time(),
        }
        shape, keys, digest = shape_of(match)
        group = waits_group(topic, digest)
        await self._control.set(SHAPES + topic, shape, {"keys": keys})
        await self._control.set(group, _waiter_key(self.id, key), waiter)
        # The log, an hour's group at a time, from the hour the run began (at most the lookback) to now.
        now = self._clock.time()
        logged: dict[str, Any] = {}
        first = int(max(self.since, now - self._lookback) // _HOUR)
        for hour in range(first, int(now // _HOUR) + 1):
            logged |= await self._control.get_group(log_group(topic, hour))
        used = _consumed(self._entries or {})
        for event_id, item in sorted(logged.items(), key=lambda kv: (kv[1].get("at", 0), kv[0])):
            if item.get("at", 0) >= self.since and event_id not in used and matches(match, item.get("data")):
                outcome = {"kind": "woke", "event": event_id, "data": item.get("data"), "at": self._clock.time()}
                stood = await resolve(self._control, self.id, key, outcome)
                await self._control.delete(group, _waiter_key(self.id, key))
                self._trace("wait", name=key, topic=topic, outcome="event", event_id=stood.get("event"), early=True)
                return stood
        if until is not None and self._clock.time() >= until:
            stood = await resolve(self._control, self.id, key, {"kind": "woke", "timeout": True, "at": until})
            await self._control.delete(group, _waiter_key(self.id, key))
            return stood
        return None

    def _suspend(self, until: float | None, waiting: dict[str, Any]) -> Suspended:
        signal = Suspended(until, waiting)
        self.suspending = signal
        return signal

    def _trace(self, op: str, **data: Any) -> None:
        self._record(
            TraceRecord(
                self.delivery.event.trace_id,
                "run",
                self.step_name,
                self._clock.time(),
                {"op": op, "run_id": self.id, "delivery_id": self.id, **data},
            )
        )


def _consumed(entries: Mapping[str, Any]) -> set[str]:
    return {
        str(e["event"]) for e in entries.values() if isinstance(e, dict) and e.get("kind") == "woke" and "event" in e
    }


# -- recorded results and failures -------------------------------------------------------------------


def _failure(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    args: list[Any] = []
    try:
        args = _json.loads(_json.dumps(list(exc.args)))
    except Exception:
        args = [str(exc)]
    return {"type": f"{cls.__module__}:{cls.__qualname__}", "message": str(exc), "args": args}


def _find(path: str, fn: Callable[..., Any] | None = None) -> Any:
    """The class named `module:qualname`, from the module if it is loaded (a step file's own classes are),
    imported otherwise; None when it is gone."""
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None and fn is not None and getattr(fn, "__module__", None) == module_name:
        module = sys.modules.get(fn.__module__)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            return None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            return None
    return found


def _replayed(key: str, entry: dict[str, Any], fn: Callable[..., Any]) -> Any:
    """What a recorded step gives back: its result (a model made again), or its failure raised again."""
    failure = entry.get("error")
    if failure is not None:
        cls = _find(str(failure.get("type", "")), fn)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(*failure.get("args", []))
            except Exception:
                exc = None
            if exc is not None:
                raise exc
        raise RecordedStepError(key, str(failure.get("type", "?")), str(failure.get("message", "")))
    value = entry.get("value")
    model = entry.get("model")
    if model:
        cls = _model_class(str(model), fn)
        if cls is not None:
            return cls.model_validate(value)
        log.warning("the model %s of recorded step %r is gone: it is replayed as a dict", model, key)
    return value


def _model_class(path: str, fn: Callable[..., Any]) -> type[BaseModel] | None:
    hint = inspect.signature(fn).return_annotation if _has_signature(fn) else None
    if isinstance(hint, type) and issubclass(hint, BaseModel) and f"{hint.__module__}:{hint.__qualname__}" == path:
        return hint
    found = _find(path, fn)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _has_signature(fn: Callable[..., Any]) -> bool:
    try:
        inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return True


# -- waking waits, cancelling runs ----------------------------------------------------------------


class Waits:
    """The engine's side of wait_for: an event on a waited-for topic is logged and offered to the waits.

    Every such event is delivered (durably, as any event) to the internal step WAITS_STEP, which calls
    `offer`; a crash before it finished delivers it again, and offering twice changes nothing."""

    def __init__(self, control: StateStore, queue: EventQueue, clock: Clock, record: Recorder, lookback: float) -> None:
        self._control = control
        self._queue = queue
        self._clock = clock
        self._record = record
        self.lookback = lookback
        self._pruned: dict[str, float] = {}
        self._hours: set[tuple[str, int]] = set()  # (topic, hour) log groups this process has noted in LOGS

    async def offer(self, event: Event) -> int:
        """Log the event, then settle the oldest matching wait of each run waiting on its topic, and wake
        the runs; returns how many it woke."""
        topic = event.topic
        hour = int(event.created_at // _HOUR)
        if (topic, hour) not in self._hours:
            await self._control.set(LOGS + topic, str(hour), 1)
            self._hours.add((topic, hour))
        await self._control.set(log_group(topic, hour), event.id, {"at": event.created_at, "data": event.data})
        # The waits it may satisfy: for each shape of match used on the topic, the group of its own values.
        waiters: dict[str, tuple[str, Any]] = {}
        for shape, spec in (await self._control.get_group(SHAPES + topic)).items():
            if shape == _ANY:
                digest = _ANY
            else:
                keys = spec.get("keys", []) if isinstance(spec, dict) else []
                values = _project(event.data, keys)
                if values is None:
                    continue
                digest = _digest(shape, values)
            group = waits_group(topic, digest)
            for wkey, waiter in (await self._control.get_group(group)).items():
                waiters[wkey] = (group, waiter)
        woken = 0
        seen: set[str] = set()
        for wkey, (group, waiter) in sorted(waiters.items(), key=lambda kv: (kv[1][1].get("at", 0), kv[0])):
            run_id = str(waiter.get("run"))
            if run_id in seen or event.created_at < float(waiter.get("since", 0)):
                continue
            if not matches(waiter.get("match"), event.data):
                continue
            if await self._control.get(RUNS, run_id) is None:  # its run is over (a crash kept its wait): drop it
                await self._control.delete(group, wkey)
                continue
            entries = await self._control.get_group(JOURNAL + run_id)
            if event.id in _consumed(entries) and entries.get(str(waiter["key"]) + "=", {}).get("event") != event.id:
                continue  # another wait of this run took this event already
            seen.add(run_id)
            outcome = {"kind": "woke", "event": event.id, "data": event.data, "at": self._clock.time()}
            stood = await resolve(self._control, run_id, str(waiter["key"]), outcome)
            await self._control.delete(group, wkey)
            if stood.get("event") == event.id:
                await self._queue.wake(run_id)
                woken += 1
                self._record(
                    TraceRecord(
                        str(waiter.get("trace_id")),
                        "run",
                        waiter.get("step"),
                        self._clock.time(),
                        {
                            "op": "woke",
                            "run_id": run_id,
                            "name": waiter["key"],
                            "topic": topic,
                            "event_id": event.id,
                            "by_trace": event.trace_id,
                        },
                    )
                )
        await self._prune(topic)
        return woken

    async def _prune(self, topic: str) -> None:
        """Events older than the lookback leave the topic's log, an hour at a time, at most once a minute."""
        now = self._clock.time()
        if now - self._pruned.get(topic, 0.0) < 60.0:
            return
        self._pruned[topic] = now
        oldest = int((now - self.lookback) // _HOUR)  # an hour's group goes whole, once all of it is too old
        for hour in await self._control.get_group(LOGS + topic):
            if int(hour) < oldest:
                await self._control.clear(log_group(topic, int(hour)))
                await self._control.delete(LOGS + topic, hour)
                self._hours.discard((topic, int(hour)))


async def cancel_run(control: StateStore, queue: EventQueue, run_id: str, reason: str, clock: Clock) -> bool:
    """Ask for a run to be cancelled: a suspended one is woken to be ended; a running one is cancelled by its
    engine within a second. False when no such run is in the queue."""
    await control.set(CANCEL, run_id, {"at": clock.time(), "reason": reason})
    if not await queue.wake(run_id):
        await control.delete(CANCEL, run_id)
        return False
    return True


async def runs(control: StateStore) -> list[dict[str, Any]]:
    """The runs with a journal (running, retrying or suspended), oldest first."""
    found = [v for v in (await control.get_group(RUNS)).values() if isinstance(v, dict)]
    return sorted(found, key=lambda r: r.get("started_at", 0))


async def run_details(control: StateStore, run_id: str) -> dict[str, Any] | None:
    meta = await control.get(RUNS, run_id)
    if not isinstance(meta, dict):
        return None
    entries = await control.get_group(JOURNAL + run_id)
    return {**meta, "journal": dict(sorted(entries.items(), key=lambda kv: (kv[1].get("at", 0), kv[0])))}


def until_of(when: float | datetime) -> float:
    """A wake time from a Unix time or a datetime (an aware one; a naive one is taken as UTC)."""
    if isinstance(when, datetime):
        from datetime import UTC

        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise DurableError(f"sleep_until takes a datetime or a Unix time, not {type(when).__name__}")
    return float(when)
