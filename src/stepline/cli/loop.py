"""Human on the loop, from a terminal: stop or resume a trace, correct state, list pending approvals.

Like `stepline dlq`, these open the project's store themselves: a running server sees a stopped trace
within a second, and a corrected value on its next read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stepline.adapters.base import Adapters
from stepline.agents.approvals import GROUP as APPROVALS
from stepline.agents.approvals import pending_in
from stepline.cli.console import console, out, print_json
from stepline.cli.options import DbOption, DirOption, JsonOption, StoreOption
from stepline.cli.runtime import traces_app, when, with_store
from stepline.core.engine import resume_trace, stop_trace

state_app = typer.Typer(help="Read and correct state values (JSON) by group and key.", no_args_is_help=True)


@traces_app.command("stop")
def traces_stop(
    trace_id: str,
    reason: Annotated[str, typer.Option(help="Why, for whoever looks at the dead letters.")] = "",
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
) -> None:
    """Stop a trace: its next deliveries go to the dead letters instead of running."""
    with_store(root, store, db, lambda a: stop_trace(a.control, trace_id, reason))
    console.print(
        f"Stopped trace {trace_id}: deliveries still to come go to the dead letters (within a second).\n"
        f"[dim]Undo with `stepline traces resume {trace_id}`, then `stepline dlq replay` what you want run.[/]"
    )


@traces_app.command("resume")
def traces_resume(trace_id: str, root: DirOption = Path("."), store: StoreOption = None, db: DbOption = None) -> None:
    """Lift a stop: the trace's deliveries run again (replay its dead letters to run those too)."""
    if not with_store(root, store, db, lambda a: resume_trace(a.control, trace_id)):
        console.print(f"[yellow]Trace {trace_id} was not stopped.[/]")
        raise typer.Exit(1)
    console.print(f"Resumed trace {trace_id}.")


@state_app.command("groups")
def state_groups(
    root: DirOption = Path("."), store: StoreOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """The state groups there are, with how many keys each holds (Stepline's own records are not among them)."""
    sizes = with_store(root, store, db, _group_sizes)
    if as_json:
        print_json(sorted(sizes))
        return
    if not sizes:
        console.print("No state yet.")
        return
    table = Table(box=None, header_style="bold")
    table.add_column("group")
    table.add_column("keys", justify="right")
    for group in sorted(sizes):
        table.add_row(group, str(sizes[group]))
    out.print(table)


async def _group_sizes(adapters: Adapters) -> dict[str, int]:
    return {group: len(await adapters.state.get_group(group)) for group in await adapters.state.groups()}


@state_app.command("get")
def state_get(
    group: str,
    key: Annotated[str | None, typer.Argument()] = None,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
) -> None:
    """Print one value, or the whole group as a JSON object."""
    if key is None:
        value = with_store(root, store, db, lambda a: a.state.get_group(group))
    else:
        value = with_store(root, store, db, lambda a: a.state.get(group, key))
        if value is None:
            console.print(f"[yellow]No value at {group}/{key}.[/]")
            raise typer.Exit(1)
    print_json(value)


@state_app.command("set")
def state_set(
    group: str, key: str, value: str, root: DirOption = Path("."), store: StoreOption = None, db: DbOption = None
) -> None:
    """Set a value, given as JSON (a bare word is taken as a string)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    with_store(root, store, db, lambda a: a.state.set(group, key, parsed))
    console.print(f"Set {group}/{key} = {json.dumps(parsed)}")


@state_app.command("delete")
def state_delete(
    group: str, key: str, root: DirOption = Path("."), store: StoreOption = None, db: DbOption = None
) -> None:
    """Delete one value; exit 1 if there was none."""
    if not with_store(root, store, db, lambda a: a.state.delete(group, key)):
        console.print(f"[yellow]No value at {group}/{key}.[/]")
        raise typer.Exit(1)
    console.print(f"Deleted {group}/{key}")


def approvals(
    name: Annotated[str | None, typer.Argument(help="Only approvals of this name.")] = None,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The approvals waiting for a person's decision, oldest first."""
    pending = pending_in(with_store(root, store, db, lambda a: a.control.get_group(APPROVALS)), name)
    if as_json:
        print_json([a.to_dict() for a in pending])
        return
    if not pending:
        console.print("[green]Nothing is waiting for a decision.[/]")
        return
    table = Table(box=None, header_style="bold")
    for column in ("approval", "asked", "expires", "step", "trace", "message"):
        table.add_column(column)
    for a in pending:
        expires = when(a.expires_at) if a.expires_at else "never"
        table.add_row(f"{a.name}/{a.key}", when(a.requested_at), expires, a.step, a.trace_id, a.message or "")
    out.print(table)
