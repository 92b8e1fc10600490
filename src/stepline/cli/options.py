"""Options more than one command takes, and the store they name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from dotenv import load_dotenv
from rich.markup import escape

from stepline._errors import StoreURLError
from stepline.adapters import STORE_ENV, legacy_store_url
from stepline.cli.console import console

DirOption = Annotated[Path, typer.Option("--dir", "-d", help="The project root (holds steps/ or src/).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
RoleOption = Annotated[
    str,
    typer.Option(
        help="What this process does: all; api (API steps only: their events go to the store for workers); "
        "or worker (event and cron steps only; it answers health checks, nothing else).",
        metavar="all|api|worker",
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where queues, state and traces live, as a URL: sqlite:///.stepline/stepline.db (the default; "
        f"relative to the project), sqlite:////abs/path.db?sync=full, redis://host:6379/0 (shared by many hosts), "
        f"memory://. Also ${STORE_ENV}.",
    ),
]
# The spellings --store replaces; hidden from --help, they still work, with a warning.
EngineOption = Annotated[str | None, typer.Option("--engine", hidden=True)]
DbOption = Annotated[Path | None, typer.Option("--db", hidden=True)]
SyncOption = Annotated[str | None, typer.Option("--sync", hidden=True)]


def store_url(
    store: str | None, engine: str | None = None, db: Path | None = None, sync: str | None = None
) -> str | None:
    """The store a command names: --store, or what the deprecated --engine/--db/--sync mean (with a warning).

    None leaves it to $STEPLINE_STORE and the default. Call it before the command enters the project
    folder: a --db path is relative to where it was typed."""
    try:
        legacy = legacy_store_url(engine, db, sync)
    except StoreURLError as exc:
        console.print(f"[red]--engine {escape(engine or '')!r} is not a store;[/] {escape(exc.fix)}")
        raise typer.Exit(2) from None
    if legacy is None:
        return store
    if store is not None:
        console.print("[red]--store and --engine/--db/--sync name the store twice;[/] give --store alone")
        raise typer.Exit(2)
    console.print(f"[yellow]--engine, --db and --sync are deprecated:[/] use --store {escape(legacy)}")
    return legacy


def load_env(root: Path) -> None:
    """Load the project's .env, if it has one (it may set STEPLINE_STORE); a variable already set in the
    environment wins (the deployment decides, not the file)."""
    load_dotenv(root / ".env", override=False)
