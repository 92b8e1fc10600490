"""`stepline runs`: durable runs (those with a journal: running, retrying or suspended), from a terminal.

Like `stepline dlq`, it opens the project's store itself, so it works whether or not a server runs; a
cancellation is a mark in the store that the server holding the run acts on within a second."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from stepline.adapters.base import FOREVER, Adapters
from stepline.cli.console import console, out, print_json
from stepline.cli.options import DbOption, DirOption, JsonOption, StoreOption
from stepline.cli.runtime import when, with_store
from stepline.core.durable import cancel_run, run_details, runs

runs_app = typer.Typer(
    help="Durable runs: handlers that recorded steps, sleep, or wait for an event.", no_args_is_help=True
)


def waiting_text(run: dict[str, Any]) -> str:
    """What a suspended run waits for, and until when, in a few words."""
    waiting = run.get("waiting")
    if not isinstance(waiting, dict):
        return ""
    until = waiting.get("until")
    until_text = "" if until is None or until >= FOREVER else f" until {when(float(until))}"
    if waiting.get("kind") == "sleep":
        return f"sleeping{until_text}"
    match = waiting.get("match")
    matching = f" matching {match}" if match else ""
    return f"waiting for {waiting.get('topic')}{matching}{until_text}"


@runs_app.command("list")
def runs_list(
    suspended: Annotated[bool, typer.Option("--suspended", help="Only the suspended runs.")] = False,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The runs with a journal, oldest first: what each waits for, and until when."""
    found = with_store(root, store, db, lambda a: runs(a.control))
    if suspended:
        found = [r for r in found if r.get("status") == "suspended"]
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("[green]No suspended runs.[/]" if suspended else "[green]No durable runs.[/]")
        return
    table = Table(box=None, header_style="bold")
    for column in ("run", "step", "status", "waiting", "started", "trace"):
        table.add_column(column, overflow="fold")
    for r in found:
        status = str(r.get("status"))
        colour = {"suspended": "yellow", "retrying": "red"}.get(status, "cyan")
        table.add_row(
            str(r.get("id")),
            str(r.get("step")),
            f"[{colour}]{status}[/]",
            escape(waiting_text(r)),
            when(float(r.get("started_at", 0))),
            str(r.get("trace_id")),
        )
    out.print(table)
    console.print(f"{len(found)} runs · [dim]stepline runs show ID · stepline runs cancel ID[/]")


@runs_app.command("show")
def runs_show(
    run_id: str,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One run: its status, what it waits for, and its journal (each step's result, sleep, wait and emit)."""
    found = with_store(root, store, db, lambda a: run_details(a.control, run_id))
    if found is None:
        console.print(
            f"[red]No durable run {run_id}.[/] It finished (its trace says how), or never recorded a step; "
            "`stepline runs list` shows those there are."
        )
        raise typer.Exit(1)
    if as_json:
        print_json(found)
        return
    out.print(f"[bold]{found['id']}[/]  step [bold]{found.get('step')}[/]  {found.get('status')}")
    out.print(f"trace {found.get('trace_id')} · started {when(float(found.get('started_at', 0)))}")
    if found.get("status") == "suspended":
        out.print(f"[yellow]{escape(waiting_text(found))}[/]")
    table = Table(box=None, header_style="bold")
    for column in ("key", "kind", "at", "recorded"):
        table.add_column(column, overflow="fold")
    for key, entry in found["journal"].items():
        table.add_row(escape(key), str(entry.get("kind")), when(float(entry.get("at", 0))), escape(_recorded(entry)))
    out.print(table)


def _recorded(entry: dict[str, Any]) -> str:
    """An entry in a few words: a step's result or failure, a sleep's end, a wait and its outcome, an emit."""
    kind = entry.get("kind")
    if "error" in entry:
        text = f"failed: {entry['error'].get('type')}: {entry['error'].get('message')}"
    elif kind == "sleep":
        text = f"until {when(float(entry['until']))}"
    elif kind == "wait":
        until = entry.get("until")
        match = f" matching {entry['match']}" if entry.get("match") else ""
        text = f"{entry.get('topic')}{match}" + (f" until {when(float(until))}" if until else "")
    elif kind == "woke":
        text = "timed out" if entry.get("timeout") else f"event {entry.get('event')}: {entry.get('data')!r}"
    elif kind == "emit":
        text = f"{entry.get('topic')} (event {entry.get('event')})"
    else:
        text = f"{entry.get('value')!r}"
    return text[:120]


@runs_app.command("cancel")
def runs_cancel(
    run_id: str,
    reason: Annotated[str, typer.Option(help="Why, for the trace.")] = "",
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
) -> None:
    """Cancel a running or suspended run: it ends as cancelled (in its trace), and its journal goes."""

    async def cancel(a: Adapters) -> bool:
        return await cancel_run(a.control, a.queue, run_id, reason or "cancelled from the command line", a.clock)

    if not with_store(root, store, db, cancel):
        console.print(f"[red]No run {run_id} in the queue.[/] `stepline runs list` shows the durable ones.")
        raise typer.Exit(1)
    console.print(f"[green]cancelling {run_id}[/]; the server running it ends it within a second")
