"""What a person reads in the terminal: step logs, problems and tables, through rich."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ._errors import Problem

console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)

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
