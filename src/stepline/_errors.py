"""Stepline's exceptions.

SteplineError
├── ProjectLoadError        the project has problems; carries every one of them
├── UndeclaredEmitError     a step emitted a topic its config does not list
├── NotJSONError            a state value or event data is not JSON
├── SchemaValidationError   data did not match a step's schema
└── StoreError              the store (SQLite, ...) could not do an operation; nothing was written
    ├── StoreUnavailableError   for now: a full disk, a lock held by another process, an I/O error
    └── StoreCorruptError       the store's file is damaged; it will not heal by itself
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class SchemaValidationError(SteplineError):
    what: str
    errors: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        detail = "; ".join(f"{e.path or '(root)'}: {e.message}" for e in self.errors)
        return f"{self.what} does not match its schema: {detail}"


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
