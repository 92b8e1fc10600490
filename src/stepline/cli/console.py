"""What a person reads in the terminal: step logs, problems and tables, through rich."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.text import Text

from stepline._errors import Problem

# Wide enough that no table row or tree line is ever cut or folded (ids must stay whole), small enough
# that rich's layout arithmetic stays cheap.
_UNBOUNDED = 100_000


class _Stdout(Console):
    """stdout for tables and trees: as wide as the terminal, or without limit when it is not one.

    Piped into a file, `grep` or `cut`, a table cut at rich's default 80 columns loses the ends of its ids;
    no reader of a pipe wants lines wrapped for a screen."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(_UNBOUNDED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = Console(stderr=True, highlight=False, soft_wrap=True)
out = _Stdout(highlight=False)


def print_machine(text: str) -> None:
    """Machine output (Mermaid, JSON) exactly as given: never wrapped, cropped, styled or emoji-replaced,
    whatever the terminal's width, so a parser reads what was meant."""
    file = out.file
    file.write(text if text.endswith("\n") else text + "\n")
    file.flush()


def print_json(value: Any) -> None:
    """`--json` output, and any JSON a command prints (state values): indented, unwrapped."""
    print_machine(json.dumps(value, indent=2, ensure_ascii=False, default=str))


_LEVEL_STYLE = {"DEBUG": "dim", "INFO": "blue", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}


class StepLogHandler(logging.Handler):
    """One line per log record: time, level, step, message, fields, and the trace id (short)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = Text()
            line.append(time.strftime("%H:%M:%S", time.localtime(record.created)) + " ", style="dim")
            line.append(f"{record.levelname[:4]:<5}", style=_LEVEL_STYLE.get(record.levelname, ""))
            step = getattr(record, "step", None)
            if step:
                line.append(f"{step} ", style="bold")
            line.append(record.getMessage())
            fields = getattr(record, "fields", None)
            if fields:
                line.append("  " + " ".join(f"{k}={v!r}" for k, v in fields.items()), style="cyan")
            trace_id = getattr(record, "trace_id", None)
            if trace_id:
                line.append(f"  trace={trace_id[-12:]}", style="dim")
            console.print(line)
            if record.exc_info and record.levelno >= logging.ERROR:
                console.print(escape(logging.Formatter().formatException(record.exc_info)), style="red")
        except Exception:
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("stepline")
    root.handlers[:] = [StepLogHandler()]
    root.setLevel(level)
    root.propagate = False


def print_problems(problems: Iterable[Problem], heading: str | None = None) -> None:
    problems = list(problems)
    if heading:
        console.print(heading)
    for p in problems:
        color = "red" if p.severity == "error" else "yellow"
        where = f"{p.file}:{p.line}" if p.line else p.file
        field = f" [bold]{escape(p.field)}[/]" if p.field else ""
        console.print(f"  [{color}]{p.severity}[/] {escape(where)}{field}: {escape(p.message)}")
        console.print(f"      [dim]fix:[/] {escape(p.fix)}")
