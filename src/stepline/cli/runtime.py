"""`stepline dlq` and `stepline traces`: the store's dead letters and traces, from a terminal.

They open the project's store themselves (the same URL the server runs on: --store, $STEPLINE_STORE or
the default), so they work whether or not a server is running."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from stepline._errors import StoreError
from stepline.adapters import open_store
from stepline.adapters.base import Adapters, StoreOptions, TraceRecord
from stepline.cli.console import console, out, print_json
from stepline.cli.options import DbOption, DirOption, JsonOption, StoreOption, load_env, project_store_url, store_url
from stepline.core.engine import replay_all as replay_every
from stepline.core.trace import record_json, summary_json

T = TypeVar("T")


dlq_app = typer.Typer(help="Dead letters: deliveries that failed every retry.", no_args_is_help=True)
traces_app = typer.Typer(help="Traces: everything that happened under one trace id.", invoke_without_command=True)


def with_store(root: Path, store: str | None, db: Path | None, work: Callable[[Adapters], Awaitable[T]]) -> T:
    """Run `work` on the project's store; a store that is not there or fails (damaged, locked, unreachable)
    is one line on stderr, what happened and what to do, and exit status 1."""
    url = store_url(store, db=db)
    load_env(root)
    url = project_store_url(root.resolve(), url)  # the server's: --store, $STEPLINE_STORE, stepline.toml
    options = StoreOptions(root=root.resolve(), must_exist=True)

    async def run() -> T:
        # Opened in the loop that uses it: a store's connections belong to the loop that made them.
        adapters = open_store(url, options)
        try:
            return await work(adapters)
        finally:
            await adapters.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:  # a damaged, locked or unreadable file: one line, what happened and what to do
        console.print(f"[bold red]Cannot use the store:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@dlq_app.command("list")
def dlq_list(
    root: DirOption = Path("."), store: StoreOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Every dead letter, oldest first."""
    dead = with_store(root, store, db, lambda a: a.queue.dead_letters())
    if as_json:
        print_json([d.to_dict() for d in dead])
        return
    if not dead:
        console.print("[green]No dead letters.[/]")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "step", "topic", "attempts", "failed", "error"):
        table.add_column(column, overflow="fold")
    for d in dead:
        table.add_row(
            d.delivery_id, d.step, d.event.topic, str(d.attempts), when(d.failed_at), f"[red]{escape(d.error[:80])}[/]"
        )
    out.print(table)
    console.print(f"{len(dead)} dead letters · [dim]stepline dlq show ID · stepline dlq replay ID|--all[/]")


@dlq_app.command("show")
def dlq_show(
    delivery_id: str,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One dead letter: its error, traceback, attempts and input."""
    dead = with_store(root, store, db, lambda a: a.queue.dead_letters(100_000))
    found = next((d for d in dead if d.delivery_id == delivery_id), None)
    if found is None:
        console.print(f"[red]No dead letter {delivery_id}.[/] `stepline dlq list` shows them.")
        raise typer.Exit(1)
    if as_json:
        print_json(found.to_dict())
        return
    out.print(f"[bold]{found.delivery_id}[/]  step [bold]{found.step}[/]  topic {found.event.topic}")
    out.print(f"trace {found.event.trace_id} · {found.attempts} attempts · failed {when(found.failed_at)}")
    out.print(f"[red]{escape(found.error)}[/]")
    if found.traceback:
        out.print(escape(found.traceback.rstrip()), style="dim")
    out.print("input:")
    print_json(found.event.data)


@dlq_app.command("replay")
def dlq_replay(
    delivery_id: Annotated[str | None, typer.Argument(help="The dead letter to replay.")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
) -> None:
    """Put dead letters back in the queue, with a fresh retry budget."""
    if (delivery_id is None) == (not replay_all):
        console.print("[red]Give a dead letter id or --all.[/]")
        raise typer.Exit(2)

    async def replay(a: Adapters) -> int:
        if delivery_id:
            return int(await a.queue.replay(delivery_id))
        return len(await replay_every(a.queue))  # every one, however many: a page at a time

    count = with_store(root, store, db, replay)
    if delivery_id and not count:
        console.print(f"[red]No dead letter {delivery_id}.[/]")
        raise typer.Exit(1)
    console.print(f"[green]replayed {count}[/]; a running server picks them up now")


@dlq_app.command("purge")
def dlq_purge(
    delivery_id: Annotated[str | None, typer.Argument(help="The dead letter to delete.")] = None,
    purge_all: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
) -> None:
    """Delete dead letters for good."""
    if (delivery_id is None) == (not purge_all):
        console.print("[red]Give a dead letter id or --all.[/]")
        raise typer.Exit(2)
    count = with_store(root, store, db, lambda a: a.queue.purge([delivery_id] if delivery_id else None))
    console.print(f"purged {count}")


@traces_app.callback()
def traces_list(
    ctx: typer.Context,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Recent traces, newest first (`stepline traces show ID` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    recent = with_store(root, store, db, lambda a: a.traces.recent(limit))
    if as_json:
        print_json([summary_json(s) for s in recent])
        return
    table = Table(box=None, header_style="bold")
    for column in ("trace", "entry", "started", "duration", "records", "status"):
        table.add_column(column, no_wrap=column in ("trace", "started"))
    for s in recent:
        status = f"[red]{s.errors} failed[/]" if s.errors else "[green]ok[/]"
        table.add_row(
            s.trace_id,
            escape(s.entry),
            when(s.started_at),
            f"{(s.last_at - s.started_at) * 1000:.1f} ms",
            str(s.records),
            status,
        )
    out.print(table)


@traces_app.command("show")
def traces_show(
    trace_id: str,
    root: DirOption = Path("."),
    store: StoreOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One trace as a tree: each handler attempt with what it emitted, changed and logged."""
    records = with_store(root, store, db, lambda a: a.traces.trace(trace_id))
    if not records:
        console.print(f"[red]No trace {trace_id}.[/] `stepline traces` lists recent ones.")
        raise typer.Exit(1)
    if as_json:
        print_json([record_json(r) for r in records])
        return
    out.print(trace_tree(trace_id, records))


def _llm_line(data: dict[str, Any]) -> str:
    """One LLM call: model, tokens, cost, latency, retries, and what it asked for or said."""
    parts = [f"llm [magenta]{escape(str(data.get('model')))}[/]"]
    if "tokens_in" in data:
        parts.append(f"{data['tokens_in']:,} → {data['tokens_out']:,} tokens")
    if data.get("cost") is not None:
        parts.append(f"${data['cost']:.4f}")
    parts.append(f"{data.get('latency_ms', 0):,.0f} ms")
    if data.get("retries"):
        parts.append(f"[yellow]{data['retries']} retries[/]")
    if data.get("status") == "error":
        parts.append(f"[red]{escape(str(data.get('error')))}[/]")
    elif data.get("tool_calls"):
        parts.append("calls " + ", ".join(escape(str(c.get("name"))) for c in data["tool_calls"]))
    elif data.get("reply"):
        reply = str(data["reply"]).replace("\n", " ")
        parts.append(f"[dim]{escape(reply[:70] + ('…' if len(reply) > 70 else ''))}[/]")
    return "  ".join(parts)


def trace_tree(trace_id: str, records: list[TraceRecord]) -> Tree:
    start = records[0].ts
    entry = next((r.data.get("entry") for r in records if r.kind == "trigger"), None) or "?"
    tree = Tree(f"[bold]{escape(str(entry))}[/]  [dim]trace {trace_id}[/]")
    # A run is its step and its delivery: two deliveries of one step in one trace (a fan-out) can overlap.
    open_runs: dict[tuple[str, str | None], Tree] = {}
    for r in records:
        at = f"[dim]{(r.ts - start) * 1000:8.1f} ms[/] "
        run = (r.step or "", r.data.get("delivery_id"))
        parent = open_runs.get(run, tree)
        if r.kind == "start":
            attempt = r.data.get("attempt")
            label = f" (attempt {attempt})" if attempt and attempt > 1 else ""
            topic = f" on {r.data['topic']}" if "topic" in r.data else ""
            open_runs[run] = tree.add(f"{at}[bold]{r.step}[/]{escape(topic)}{label}")
        elif r.kind == "end":
            if r.data.get("status") == "ok":
                parent.add(f"{at}[green]ok[/] in {r.data.get('duration_ms', 0):.1f} ms")
            else:
                parent.add(f"{at}[red]{r.data.get('status')}: {escape(str(r.data.get('error', '')))}[/]")
            open_runs.pop(run, None)
        elif r.kind == "emit":
            subs = ", ".join(r.data.get("subscribers", [])) or "no subscriber"
            dup = " [yellow](duplicate, not queued)[/]" if r.data.get("duplicate") else ""
            parent.add(f"{at}emit [cyan]{escape(r.data.get('topic', ''))}[/] → {escape(subs)}{dup}")
        elif r.kind == "state":
            parent.add(
                f"{at}state {r.data.get('op')} {escape(str(r.data.get('group')))}/"
                f"{escape(str(r.data.get('key') or ''))}"
            )
        elif r.kind == "log":
            fields = r.data.get("fields") or {}
            shown = "  " + " ".join(f"{k}={v!r}" for k, v in fields.items()) if fields else ""
            parent.add(f"{at}{r.data.get('level', 'info')} {escape(str(r.data.get('message')))}[dim]{escape(shown)}[/]")
        elif r.kind == "retry":
            parent.add(f"{at}[yellow]retry in {r.data.get('delay')} s[/] after {escape(str(r.data.get('error')))}")
        elif r.kind == "llm":
            parent.add(at + _llm_line(r.data))
        elif r.kind == "tool":
            status = "[green]ok[/]" if r.data.get("status") == "ok" else f"[red]{escape(str(r.data.get('error')))}[/]"
            args = escape(json.dumps(r.data.get("arguments", {}))[:80])
            parent.add(f"{at}tool [magenta]{escape(str(r.data.get('tool')))}[/]({args}) {status}")
        elif r.kind == "dead_letter":
            tree.add(
                f"{at}[red]dead letter[/] {r.step} after {r.data.get('attempts')} attempts "
                f"[dim](stepline dlq show {r.data.get('delivery_id')})[/]"
            )
    return tree
