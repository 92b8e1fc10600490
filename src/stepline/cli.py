"""The `stepline` command."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import httpx2 as httpx
import typer
from rich.table import Table

from ._app import Stepline
from ._cli_loop import approvals, state_app
from ._cli_runtime import dlq_app, traces_app
from ._config import ApiConfig
from ._console import console, out, print_problems, setup_logging
from ._errors import Problem, ProjectLoadError
from ._eval_run import run_eval, run_table, summary_line
from ._evals import load_evals, previous, save
from ._graph import as_json, mermaid, text_tree, trigger
from ._loader import load_project
from ._project import Project
from ._settings import load_settings

app = typer.Typer(
    name="stepline",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="APIs, background jobs, cron jobs and agents as steps of one event-driven backend.",
)

DirOption = Annotated[Path, typer.Option("--dir", "-d", help="The project root (holds steps/).")]
HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(help="Port to listen on.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DEFAULT_PORT = 3000


def _load(root: Path) -> Project:
    try:
        return load_project(root)
    except ProjectLoadError as exc:
        print_problems(exc.problems, f"[bold red]The project at {exc.root} cannot load:[/]")
        raise typer.Exit(1) from None


def _app(root: Path, **kwargs: Any) -> Stepline:
    try:
        return Stepline(root, **kwargs)
    except ProjectLoadError as exc:
        print_problems(exc.problems, f"[bold red]The project at {exc.root} cannot load:[/]")
        raise typer.Exit(1) from None


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Folder to create the project in.")],
) -> None:
    """Create a project that runs at once: an example flow and its tests."""
    target = Path(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        console.print(f"[red]{target} already exists and is not empty.[/] Choose another name.")
        raise typer.Exit(1)
    template = resources.files("stepline") / "_template"
    with resources.as_file(template) as source:
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Shipped under other names so that neither packaging nor pytest nor git treats them as the repo's own.
    for path in target.rglob("*.tmpl"):
        path.rename(path.with_suffix(""))
    (target / "gitignore").rename(target / ".gitignore")
    for filled in (target / "README.md", target / "pyproject.toml"):
        filled.write_text(filled.read_text().replace("{{name}}", target.resolve().name))
    console.print(
        f"[green]Created[/] {target}/ with an example flow and its tests. Next:\n"
        f"  cd {name}\n  stepline dev        # serves http://127.0.0.1:{DEFAULT_PORT}\n"
        f"  pytest              # the example's tests"
    )


EngineOption = Annotated[str, typer.Option("--engine", help="sqlite (durable, the default) or memory.")]
DbOption = Annotated[Path | None, typer.Option("--db", help="The SQLite file (default .stepline/stepline.db).")]
SyncOption = Annotated[str, typer.Option("--sync", help="normal (default) or full: fsync every commit.")]
KeepOption = Annotated[float, typer.Option("--keep-traces", min=0.01, help="Days to keep traces.")]


def _engine_options(engine: str, db: Path | None, sync: str, keep_traces: float = 7.0) -> dict[str, Any]:
    if engine not in ("sqlite", "memory"):
        console.print(f"[red]--engine {engine!r} is not an engine;[/] use sqlite or memory")
        raise typer.Exit(2)
    if sync.upper() not in ("NORMAL", "FULL"):
        console.print(f"[red]--sync {sync!r} is not a setting;[/] use normal or full")
        raise typer.Exit(2)
    return {"engine": engine, "database": db, "synchronous": sync.upper(), "trace_retention": keep_traces * 86400}


@app.command()
def dev(
    root: DirOption = Path("."),
    host: HostOption = "127.0.0.1",
    port: PortOption = DEFAULT_PORT,
    engine: EngineOption = "sqlite",
    db: DbOption = None,
    sync: SyncOption = "normal",
    keep_traces: KeepOption = 7.0,
) -> None:
    """Run the project in one process with hot reload, the admin API on."""
    from ._server import serve

    setup_logging()
    stepline = _app(root, dev=True, **_engine_options(engine, db, sync, keep_traces))
    asyncio.run(serve(stepline, host, port, reload=True))


@app.command()
def start(
    root: DirOption = Path("."),
    host: HostOption = "0.0.0.0",
    port: PortOption = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes; each serves HTTP and runs steps.")] = 1,
    engine: EngineOption = "sqlite",
    db: DbOption = None,
    sync: SyncOption = "normal",
    grace: Annotated[float, typer.Option(help="Seconds running handlers get to finish on SIGTERM.")] = 30.0,
    keep_traces: KeepOption = 7.0,
) -> None:
    """Run the project for production: no reload; the admin API only with STEPLINE_ADMIN_TOKEN set.

    SIGTERM drains: no new work is taken, running handlers get --grace seconds, then the process exits.
    """
    options = _engine_options(engine, db, sync, keep_traces)
    if workers > 1:
        if engine == "memory":
            console.print("[red]--workers needs a shared engine;[/] the memory engine lives in one process")
            raise typer.Exit(2)
        from ._workers import supervise

        _load(root)  # fail here, once, with the problems listed, rather than in every worker
        raise typer.Exit(supervise(root, host, port, workers, db=db, sync=sync, grace=grace, keep_traces=keep_traces))
    _serve_start(root, host, port, options, grace)


def _serve_start(
    root: Path, host: str, port: int, options: dict[str, Any], grace: float, fd: int | None = None
) -> None:
    from ._server import serve

    setup_logging()
    stepline = _app(root, dev=False, admin_token=os.environ.get("STEPLINE_ADMIN_TOKEN") or None, **options)
    asyncio.run(serve(stepline, host, port, reload=False, fd=fd, grace=grace, banner=fd is None))


@app.command("worker", hidden=True)
def worker(
    fd: Annotated[int, typer.Option(help="The listening socket, inherited from the supervisor.")],
    root: DirOption = Path("."),
    db: DbOption = None,
    sync: SyncOption = "normal",
    grace: float = 30.0,
    keep_traces: KeepOption = 7.0,
) -> None:
    """One worker process of `stepline start --workers N` (started by it, not by hand)."""
    from ._workers import die_with_parent

    die_with_parent()
    _serve_start(root, "", 0, _engine_options("sqlite", db, sync, keep_traces), grace, fd=fd)


@app.command()
def emit(
    topic: Annotated[str, typer.Option("--topic", "-t", help="The topic to emit.")],
    data: Annotated[str, typer.Option("--data", help="The event data, as JSON.")] = "null",
    url: Annotated[
        str, typer.Option(help="A running server (stepline dev or start).")
    ] = f"http://127.0.0.1:{DEFAULT_PORT}",
    local: Annotated[
        bool, typer.Option("--local", help="Run the subscribers here, in this process, until the trace settles.")
    ] = False,
    root: DirOption = Path("."),
    as_json_: JsonOption = False,
) -> None:
    """Emit an event to a running server, or run it locally with --local."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        console.print(f"[red]--data is not JSON:[/] {exc}. Example: --data '{{\"id\": 1}}'")
        raise typer.Exit(2) from None
    if local:
        result = asyncio.run(_emit_local(root, topic, payload))
    else:
        headers = {}
        token = os.environ.get("STEPLINE_ADMIN_TOKEN")
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            response = httpx.post(
                f"{url.rstrip('/')}/__stepline/emit",
                json={"topic": topic, "data": payload},
                headers=headers,
                timeout=10,
            )
        except httpx.ConnectError:
            console.print(f"[red]No server at {url}.[/] Start one with `stepline dev`, or use --local.")
            raise typer.Exit(1) from None
        if response.status_code != 202:
            console.print(f"[red]The server refused the event ({response.status_code}):[/] {response.text}")
            raise typer.Exit(1)
        result = response.json()
    if as_json_:
        out.print_json(json.dumps(result))
        return
    subs = ", ".join(result["subscribers"]) or "[yellow]no subscriber[/]"
    console.print(f"[green]emitted[/] {topic} → {subs}  [dim]trace {result['traceId']}[/]")


async def _emit_local(root: Path, topic: str, data: Any) -> dict[str, Any]:
    setup_logging()
    stepline = _app(root, dev=True)
    async with stepline.lifespan():
        event = await stepline.emit(topic, data)
        await stepline.settle()
    return {
        "traceId": event.trace_id,
        "eventId": event.id,
        "subscribers": [s.name for s in stepline.project.subscribers(topic)],
    }


@app.command()
def graph(
    root: DirOption = Path("."),
    flow: Annotated[str | None, typer.Option(help="Only this flow (and flows nested in it).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, mermaid or json.")] = "text",
) -> None:
    """The flow graph: steps and the topics between them."""
    project = _load(root)
    if fmt == "mermaid":
        out.print(mermaid(project, flow), markup=False)
    elif fmt == "json":
        out.print_json(json.dumps(as_json(project, flow)))
    elif fmt == "text":
        out.print(text_tree(project, flow))
    else:
        console.print(f"[red]unknown format {fmt!r}[/]; use text, mermaid or json")
        raise typer.Exit(2)


@app.command()
def routes(root: DirOption = Path("."), as_json_: JsonOption = False) -> None:
    """The HTTP routes of the API steps."""
    project = _load(root)
    rows: list[dict[str, Any]] = []
    for step in sorted(project.api_steps, key=lambda s: (getattr(s.config, "path", ""), s.name)):
        assert isinstance(step.config, ApiConfig)
        rows.append(
            {
                "method": step.config.method,
                "path": step.config.path,
                "step": step.name,
                "file": step.rel,
                "emits": step.config.emit_topics,
            }
        )
    if as_json_:
        out.print_json(json.dumps(rows))
        return
    table = Table(box=None, header_style="bold")
    for column in ("method", "path", "step", "emits", "file"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["method"], row["path"], row["step"], ", ".join(row["emits"]), f"[dim]{row['file']}[/]")
    out.print(table)


@app.command()
def check(root: DirOption = Path("."), as_json_: JsonOption = False) -> None:
    """Load the project and its stepline.toml and list their problems; exit 1 if it cannot load."""
    problems: list[Problem] = []
    project = None
    try:
        project = load_project(root)
    except ProjectLoadError as exc:
        problems += exc.problems
    try:
        load_settings(root.resolve())
    except ProjectLoadError as exc:
        problems += exc.problems
    if problems or project is None:
        if as_json_:
            out.print_json(json.dumps({"ok": False, "problems": [p.to_dict() for p in problems]}))
        else:
            print_problems(problems, f"[bold red]The project at {root.resolve()} cannot load:[/]")
        raise typer.Exit(1) from None
    if as_json_:
        out.print_json(
            json.dumps({"ok": True, "steps": len(project.steps), "problems": [p.to_dict() for p in project.warnings]})
        )
        return
    table = Table(box=None, header_style="bold")
    for column in ("type", "step", "trigger", "file"):
        table.add_column(column)
    for step in project.steps.values():
        table.add_row(step.type, step.name, trigger(step), f"[dim]{step.rel}[/]")
    out.print(table)
    print_problems(project.warnings)
    console.print(f"[green]ok[/]: {len(project.steps)} steps, {len(project.warnings)} warnings")


@app.command("mcp")
def mcp(root: DirOption = Path("."), engine: EngineOption = "sqlite", db: DbOption = None) -> None:
    """Serve the project's API steps and topics as MCP tools over stdin/stdout (for MCP clients)."""
    from ._mcp import serve_stdio

    setup_logging()  # to stderr: stdout carries the protocol
    stepline = _app(root, dev=False, **_engine_options(engine, db, "normal"))
    asyncio.run(serve_stdio(stepline))


@app.command("eval")
def eval_(
    name: Annotated[str | None, typer.Argument(help="One eval (its file name in evals/, without .yaml).")] = None,
    root: DirOption = Path("."),
    as_json_: JsonOption = False,
) -> None:
    """Run the evals in evals/ through the real flow; exit 1 when a gate fails (for CI)."""
    root = root.resolve()
    try:
        evals = load_evals(root, name)
    except ProjectLoadError as exc:
        print_problems(exc.problems, "[bold red]The evals cannot load:[/]")
        raise typer.Exit(1) from None
    if not evals:
        console.print(f"No evals in {root / 'evals'}. docs/agents.md shows the format.")
        raise typer.Exit(1)
    runs = []
    for ev in evals:
        run = asyncio.run(run_eval(root, ev))
        before = previous(root, ev.name)
        save(root, run)
        runs.append(run)
        if not as_json_:
            out.print(run_table(run))
            out.print(summary_line(run, before))
            for failure in run.gate_failures:
                out.print(f"[red]gate failed:[/] {failure}")
    if as_json_:
        out.print_json(json.dumps([r.to_dict() for r in runs], default=str))
    if any(r.gate_failures for r in runs):
        raise typer.Exit(1)


def main() -> None:
    app()


app.add_typer(dlq_app, name="dlq")
app.add_typer(traces_app, name="traces")
app.add_typer(state_app, name="state")
app.command("approvals")(approvals)
