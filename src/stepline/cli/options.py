"""Options more than one command takes, and the store they name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from dotenv import load_dotenv
from rich.markup import escape

from stepline._errors import ProjectLoadError, StoreURLError
from stepline.adapters import STORE_ENV, legacy_store_url, store_url_from_env
from stepline.cli.console import console, print_problems
from stepline.steps.settings import load_settings

DirOption = Annotated[Path, typer.Option("--dir", "-d", help="The project root (holds steps/ or src/).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
RoleOption = Annotated[
    str | None,
    typer.Option(
        help="What this process does: all; api (API steps only: their events go to the store for workers); "
        "or worker (event and cron steps only; it answers health checks, nothing else). [default: all]",
        metavar="all|api|worker",
        show_default=False,
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where queues, state and traces live, as a URL: sqlite:///.stepline/stepline.db (the default; "
        f"relative to the project), sqlite:////abs/path.db?sync=full, redis://host:6379/0 (shared by many hosts), "
        f"memory://. Also ${STORE_ENV}, or [store] url in stepline.toml.",
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


def cannot_load(exc: ProjectLoadError) -> NoReturn:
    """A project (or its stepline.toml) that cannot load: every problem listed, then exit 1."""
    print_problems(exc.problems, f"[bold red]The project at {exc.root} cannot load:[/]")
    raise typer.Exit(1) from None


def project_store_url(root: Path, given: str | None) -> str:
    """The store a project runs on: the one given (--store), else $STEPLINE_STORE, else `[store] url` in
    its stepline.toml, else the default file. A broken stepline.toml is listed, and exit 1."""
    if given:
        return given
    if os.environ.get(STORE_ENV, "").strip():
        return store_url_from_env()
    try:
        url = load_settings(root).store.url
    except ProjectLoadError as exc:
        cannot_load(exc)
    return url or store_url_from_env()
