"""Stepline's exceptions.

Every error Stepline raises on purpose is a SteplineError; a store's own driver errors are mapped
to StoreError at the adapter boundary, so nothing above the adapters sees sqlite3 or redis errors.

SteplineError
├── ProjectLoadError          the project has problems; carries every one of them (as Problems)
├── UndeclaredEmitError       a step emitted a topic its config does not list
├── NotJSONError              a state value or event data is not JSON             (also a TypeError)
├── StateUpdateError          an increment of a non-number, a merge into a non-dict (also a TypeError)
├── SchemaValidationError     data did not match a step's schema (FieldErrors say where)
├── NotASchemaError           something given as a schema is not one              (also a ValueError)
├── HttpError                 a request refused before any handler ran: status and reason
├── EngineStoppedError        a sync handler used its ctx after the engine stopped (also a RuntimeError)
├── StoreError                the store could not do an operation; nothing was written
│   ├── StoreUnavailableError     for now: a full disk, a lock held elsewhere, a lost connection
│   ├── StoreCorruptError         the store's data is damaged; it will not heal by itself
│   └── StoreURLError             a store URL that names no store, or options it does not take
│                                 (also a ValueError)
├── LLMError                  a model call failed for good
│   ├── StructuredOutputError     the reply did not fit the output model
│   └── TurnLimitError            the tool loop ran out of turns
├── LLMUsageError             a ctx.llm call that cannot work, refused before sending
├── ToolError                 a tool could not be built
├── ToolArgumentsError        a model called a tool with arguments that do not fit
├── McpServerError            an MCP server could not be started or reached
├── ApprovalError             an approval asked for in a way that cannot work
├── MemoryConflictError       other writers changed a memory under every attempt
├── DurableError              a durable call (ctx.step, ctx.sleep, ctx.wait_for) that cannot work
│   ├── StepNameError             a journal key used twice in one run, or a reserved one
│   ├── JournalLimitError         a run past its journal's limits (entries, size of a result)
│   └── CodeChangedError          a suspended run's step code changed, and its step says dead_letter
├── RecordedStepError         a recorded failure of a ctx.step whose exception cannot be rebuilt
└── WaitTimeoutError          a ctx.wait_for whose timeout came before a matching event

BaseException
└── ControlSignal             the runtime's own flow control (suspend, cancel); not an error,
    └── Suspended             and not caught by a handler's `except Exception`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


class SteplineError(Exception):
    """Base class of every error Stepline raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) in a project, located precisely enough to fix."""

    file: str
    field: str
    message: str
    fix: str
    line: int | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field_part = f" [{self.field}]" if self.field else ""
        return f"{where}{field_part}: {self.message}\n    fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "field": self.field,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
            "severity": self.severity,
        }


class ProjectLoadError(SteplineError):
    """The project cannot be loaded; `problems` lists every error found, not just the first."""

    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.root = root
        self.problems = problems
        count = len(problems)
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the project at {root}:\n{listing}")


class UndeclaredEmitError(SteplineError):
    def __init__(self, step: str, topic: str, declared: list[str]) -> None:
        self.step = step
        self.topic = topic
        self.declared = declared
        listed = ", ".join(repr(t) for t in declared) if declared else "nothing"
        super().__init__(
            f"step {step!r} emitted topic {topic!r}, but its config declares {listed}. "
            f'Add "{topic}" to the step\'s "emits" list.'
        )


class NotJSONError(SteplineError, TypeError):
    """A state value or event data that cannot be stored as JSON."""


class StateUpdateError(SteplineError, TypeError):
    """An increment of a value that is not a number, a merge into a value that is not a dict."""


@dataclass
class FieldError:
    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class SchemaValidationError(SteplineError):
    """Data did not match a step's schema; `errors` says where and why, one entry per field."""

    def __init__(self, what: str, errors: list[FieldError] | None = None) -> None:
        self.what = what
        self.errors = list(errors or [])
        detail = "; ".join(f"{e.path or '(root)'}: {e.message}" for e in self.errors)
        super().__init__(f"{what} does not match its schema: {detail}")


class StoreError(SteplineError):
    """A store operation failed and changed nothing. `reason` is the driver's own words, `fix` what to do."""

    def __init__(self, message: str, *, reason: str = "", fix: str = "") -> None:
        self.message = message  # what happened, without the fix
        self.reason = reason or message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class StoreUnavailableError(StoreError):
    """The store cannot take writes (or reads) right now: a full disk, a lock held elsewhere, a lost
    connection. Retried operations succeed once the cause clears; an event whose emit raised this was
    not accepted."""


class StoreCorruptError(StoreError):
    """The store's data is damaged (a SQLite file with a bad header, truncated, or overwritten)."""


class StoreURLError(StoreError, ValueError):
    """A store URL that cannot be opened as written: an unknown scheme, a bad path or option; `fix` shows
    the forms that work."""


class NotASchemaError(SteplineError, ValueError):
    """Raised by `Schema.of` with a message that says what was given and what is expected."""


class HttpError(SteplineError):
    """A request refused before any handler ran: the status and the reason to send."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BacklogFullError(SteplineError):
    """An emit from an API step (or from outside any step) was refused, not queued: a subscriber's backlog
    is at its `maxBacklog`. The HTTP app answers 503 with Retry-After; nothing was accepted."""

    def __init__(self, step: str, backlog: int, limit: int, retry_after: int = 1) -> None:
        self.step = step
        self.backlog = backlog
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"step {step!r} has {backlog} events waiting (its maxBacklog is {limit}); try again in {retry_after} s"
        )


class EngineStoppedError(SteplineError, RuntimeError):
    """A sync handler used its ctx after the engine stopped (it ran past its timeout, or shutdown began)."""

    def __init__(self) -> None:
        super().__init__(
            "the engine stopped while this sync handler ran (it was abandoned after its timeout, "
            "or the process is shutting down); its ctx can no longer be used"
        )


class LLMError(SteplineError):
    """A call to the model failed for good (after retries, or with an error that retrying cannot fix)."""

    def __init__(self, message: str, retries: int = 0) -> None:
        super().__init__(message)
        self.retries = retries


class StructuredOutputError(LLMError):
    """The model's reply did not fit the output model, even after the repair attempts."""

    def __init__(self, model: type, text: str, errors: str) -> None:
        self.text = text
        self.errors = errors
        super().__init__(f"the reply does not match {model.__name__} after repair: {errors}\nreply: {text[:500]}")


class TurnLimitError(LLMError):
    """The tool loop used all its turns without a final answer; `messages` holds the conversation so far."""

    def __init__(self, max_turns: int, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        super().__init__(
            f"no final answer after {max_turns} turns of tool calls; raise max_turns, or tell the model "
            "in the system prompt when to stop calling tools"
        )


class LLMUsageError(SteplineError):
    """A `ctx.llm` call was written in a way that cannot work (an unknown option, an option the call sets
    itself, tools where they would be ignored); raised before anything is sent, with the fix."""


class ToolError(SteplineError):
    """A tool could not be built (a bad name, a step that does not exist, a signature without types)."""


class ToolArgumentsError(SteplineError):
    """The model called a tool with arguments that do not fit its schema; the message goes back to the model."""


class McpServerError(SteplineError):
    """An MCP server given to `mcp_tools` could not be started or reached."""

    def __init__(self, server: str, exc: BaseException) -> None:
        super().__init__(
            f"the MCP server {server} could not be started or reached ({type(exc).__name__}: {exc}); "
            "check the command (or url), and run it by hand to see its own errors"
        )


class ApprovalError(SteplineError):
    """An approval asked for in a way that cannot work (a second request for a pending one, bad input)."""


class MemoryConflictError(SteplineError):
    """Other writers changed the memory under every attempt of a write."""

    def __init__(self, group: str, key: str, attempts: int) -> None:
        super().__init__(
            f"memory {group}/{key} changed under this write {attempts} times in a row: too many steps write "
            "the same memory at once; give them memories of their own (another key), or fewer concurrent runs "
            "(infrastructure.handler.concurrency in the step's config)"
        )


class DurableError(SteplineError):
    """A durable call (ctx.step, ctx.sleep, ctx.wait_for) that cannot work as made; the message says the fix."""


class StepNameError(DurableError):
    pass


class JournalLimitError(DurableError):
    pass


class CodeChangedError(DurableError):
    pass


class RecordedStepError(SteplineError):
    """What a replayed `ctx.step` raises when the exception it recorded cannot be made again (its class
    is gone, or does not take its arguments back): `type` and `message` are the recorded ones."""

    def __init__(self, name: str, type: str, message: str) -> None:
        self.name = name
        self.type = type
        self.message = message
        super().__init__(f"ctx.step {name!r} failed in an earlier execution of this run: {type}: {message}")


class WaitTimeoutError(SteplineError):
    """`ctx.wait_for` reached its timeout before a matching event came. Catch it to take the timeout path."""

    def __init__(self, topic: str, match: Any, timeout: float | None) -> None:
        self.topic = topic
        self.match = match
        self.timeout = timeout
        super().__init__(f"no event on {topic!r} matching {match!r} came within {timeout:g} s")


class ControlSignal(BaseException):
    """The runtime's own flow control (a handler suspended to wait, a run cancelled).

    It derives from BaseException, not Exception, so that a handler's `except Exception:` does not
    swallow it on its way back to the engine.
    """


class Suspended(ControlSignal):
    """A durable handler waits (ctx.sleep, ctx.wait_for): the engine frees its worker slot and runs it again
    from the top at `until` (a time on the runtime's clock; None: when an event wakes it). Let it pass:
    a handler that catches it and returns fails its run."""

    def __init__(self, until: float | None, waiting: dict[str, Any]) -> None:
        super().__init__(f"suspended: {waiting}")
        self.until = until
        self.waiting = waiting
