"""The `stepline` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import httpx2 as httpx
import typer
from rich.markup import escape
from rich.table import Table

from stepline._errors import Problem, ProjectLoadError, StoreError, StoreUnavailableError
from stepline.adapters.base import Adapters, TraceRecord
from stepline.agents.evals import load_evals, previous, save
from stepline.app import ROLES, Stepline
from stepline.cli.console import console, out, print_json, print_machine, print_problems, setup_logging
from stepline.cli.evals import run_eval, run_table, summary_line
from stepline.cli.loop import approvals, state_app
from stepline.cli.options import (
    DbOption,
    DirOption,
    EngineOption,
    JsonOption,
    RoleOption,
    StoreOption,
    SyncOption,
    cannot_load,
    load_env,
    project_store_url,
    store_url,
)
from stepline.cli.runs import runs_app, waiting_text
from stepline.cli.runtime import dlq_app, traces_app
from stepline.steps.graph import as_json, mermaid, text_tree, trigger
from stepline.steps.loader import load_project
from stepline.steps.project import Project
from stepline.steps.settings import Settings, load_settings
from stepline.steps.settings import parse_size as size_of

app = typer.Typer(
    name="stepline",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="APIs, background jobs, cron jobs and agents as steps of one event-driven backend.",
)

DEFAULT_PORT = 3000


def _version(value: bool) -> None:
    if value:
        from stepline._version import __version__

        out.print(f"stepline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """APIs, background jobs, cron jobs and agents as steps of one event-driven backend."""


@contextlib.contextmanager
def _in_project(root: Path) -> Iterator[Path]:
    """Enter the project at `root` for a command that loads or runs it; yields the root, absolute.

    The project's .env is loaded first, so settings and step modules see it. The project folder is the
    working directory while the command runs, so a step's relative paths land in the project wherever the
    command was typed. Paths on the command line (the deprecated `--db`) are resolved before this, against
    where they were typed.
    """
    root = root.resolve()
    load_env(root)
    if not root.is_dir():  # no such folder: loading the project says so, and what to do
        yield root
        return
    with contextlib.chdir(root):
        yield root


def _load(root: Path) -> Project:
    try:
        return load_project(root)
    except ProjectLoadError as exc:
        cannot_load(exc)


def _app(root: Path, **kwargs: Any) -> Stepline:
    try:
        return Stepline(root, **kwargs)
    except ProjectLoadError as exc:
        cannot_load(exc)
    except StoreError as exc:  # a damaged or unreachable database: one line, what and what to do
        console.print(f"[bold red]Cannot open the store:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except ValueError as exc:  # options that do not go together (--role api on a store of one process)
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None


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


KeepOption = Annotated[
    float | None, typer.Option("--keep-traces", min=0.01, help="Days to keep traces. [default: 7]", show_default=False)
]
TraceCapOption = Annotated[
    float | None,
    typer.Option(
        "--max-traces-mb",
        min=0,
        help="Past this many MB of traces in the store, the oldest go; 0: no cap. [default: 1024]",
        show_default=False,
    ),
]
MaxBodyOption = Annotated[
    str | None,
    typer.Option(
        "--max-body",
        help="Largest request body taken, like 1MB or 512KB; larger ones get 413. [default: 1MB]",
        show_default=False,
    ),
]
HostsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        help="A host name (besides localhost and IP addresses) the admin API and Workbench answer to without "
        "a token; repeat it for more. Also STEPLINE_ALLOWED_HOSTS, comma-separated.",
    ),
]
HostOption = Annotated[
    str | None,
    typer.Option(
        help="Interface to listen on (0.0.0.0: every interface, as in a container). [default: 127.0.0.1]",
        show_default=False,
    ),
]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on. [default: 3000]", show_default=False)]
GraceOption = Annotated[
    float | None,
    typer.Option(help="Seconds running handlers get to finish on SIGTERM. [default: 30]", show_default=False),
]


def _settings(root: Path) -> Settings:
    """stepline.toml: every option a command is not given comes from it (docs/configuration.md)."""
    try:
        return load_settings(root)
    except ProjectLoadError as exc:
        cannot_load(exc)


def _role(role: str) -> str:
    if role not in ROLES:
        console.print(f"[red]--role {escape(role)} is not a role;[/] write --role all, api or worker")
        raise typer.Exit(2)
    return role


async def _verify_and_close(adapters: Adapters) -> None:
    try:
        await adapters.verify()
    except StoreUnavailableError:
        pass  # not up yet: the workers wait for it, and their readiness says so
    except StoreError as exc:
        console.print(f"[bold red]Cannot use the store:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        await adapters.close()


def _store_options(
    store: str | None, keep_traces: float | None = None, max_traces_mb: float | None = None
) -> dict[str, Any]:
    """Stepline's options for what was given on the command line; what was not, Stepline reads from the file."""
    options: dict[str, Any] = {"store": store}
    if keep_traces is not None:
        options["trace_retention"] = keep_traces * 86400
    if max_traces_mb is not None:
        options["trace_max_bytes"] = int(max_traces_mb * 1024 * 1024) or None
    return options


def _http_options(max_body: str | None, allowed_hosts: list[str] | None) -> dict[str, Any]:
    hosts = [*(allowed_hosts or []), *os.environ.get("STEPLINE_ALLOWED_HOSTS", "").split(",")]
    options: dict[str, Any] = {"allowed_hosts": [h.strip() for h in hosts if h.strip()]}
    if max_body is not None:
        options["max_body"] = parse_size(max_body, "--max-body")
    return options


def parse_size(text: str, flag: str) -> int:
    """`1MB`, `512KB`, `2GB` or a number of bytes (K, M and G are powers of 1024)."""
    try:
        return size_of(text)
    except ValueError as exc:
        console.print(f"[red]{flag} {text!r}:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command()
def dev(
    root: DirOption = Path("."),
    host: HostOption = None,
    port: PortOption = None,
    store: StoreOption = None,
    keep_traces: KeepOption = None,
    max_traces_mb: TraceCapOption = None,
    max_body: MaxBodyOption = None,
    allowed_host: HostsOption = None,
    engine: EngineOption = None,
    db: DbOption = None,
    sync: SyncOption = None,
) -> None:
    """Run the project in one process with hot reload, the admin API on.

    An option not given here is read from stepline.toml ([server], [http], [store], [traces]), else its
    default."""
    from stepline.cli.serve import serve

    setup_logging()
    url = store_url(store, engine, db, sync)
    options = _store_options(url, keep_traces, max_traces_mb) | _http_options(max_body, allowed_host)
    with _in_project(root) as project_root:
        server = _settings(project_root).server
        # One process that does everything, whatever role stepline.toml gives `start`.
        stepline = _app(project_root, dev=True, role="all", **options)
        asyncio.run(
            serve(
                stepline,
                host if host is not None else server.host,
                port if port is not None else server.port,
                reload=True,
                grace=server.grace,
            )
        )


@app.command()
def start(
    root: DirOption = Path("."),
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes; each serves HTTP and runs steps. [default: 1]", show_default=False),
    ] = None,
    store: StoreOption = None,
    role: RoleOption = None,
    grace: GraceOption = None,
    keep_traces: KeepOption = None,
    max_traces_mb: TraceCapOption = None,
    max_body: MaxBodyOption = None,
    allowed_host: HostsOption = None,
    engine: EngineOption = None,
    db: DbOption = None,
    sync: SyncOption = None,
) -> None:
    """Run the project for production: no reload; the admin API only with STEPLINE_ADMIN_TOKEN set.

    Listens on 127.0.0.1 unless --host says otherwise (--host 0.0.0.0 in a container). SIGTERM drains: no
    new work is taken, running handlers get --grace seconds, then the process exits. An option not given
    here is read from stepline.toml ([server], [http], [store], [traces]), else its default.
    """
    url = store_url(store, engine, db, sync)
    options = _store_options(url, keep_traces, max_traces_mb) | _http_options(max_body, allowed_host)
    if role is not None:
        options["role"] = _role(role)
    with _in_project(root) as project_root:
        server = _settings(project_root).server
        host = host if host is not None else server.host
        port = port if port is not None else server.port
        workers = workers if workers is not None else server.workers
        grace = grace if grace is not None else server.grace
        if workers > 1:
            from stepline.cli.workers import supervise

            # Fail here, once, with the problems listed (a broken step, a damaged database), rather than in
            # every worker, which the supervisor would start again and again.
            adapters = _app(project_root, dev=False, **options).adapters
            asyncio.run(_verify_and_close(adapters))
            if adapters.per_process:
                console.print(
                    f"[red]--workers needs a store the workers share;[/] {escape(adapters.url)} lives in one "
                    "process. Use the default store (a file), or another --store the workers can share"
                )
                raise typer.Exit(2)
            # The options given here, on every worker's command line (what was not given, each worker reads
            # from stepline.toml as this process did); the store's URL goes in their environment (a password
            # in it stays out of `ps`). Relative paths in the URL are relative to the project.
            forwarded: list[str] = []
            if keep_traces is not None:
                forwarded += ["--keep-traces", str(keep_traces)]
            if max_traces_mb is not None:
                forwarded += ["--max-traces-mb", str(max_traces_mb)]
            if role is not None:
                forwarded += ["--role", role]
            if "max_body" in options:
                forwarded += ["--max-body", str(options["max_body"])]
            for name in options["allowed_hosts"]:
                forwarded += ["--allowed-host", name]
            store_text = project_store_url(project_root, url)
            code = supervise(
                project_root, host, port, workers, forwarded, store=store_text, shown=adapters.url, grace=grace
            )
            raise typer.Exit(code)
        _serve_start(project_root, host, port, options, grace)


def _serve_start(
    root: Path, host: str, port: int, options: dict[str, Any], grace: float, fd: int | None = None
) -> None:
    from stepline.cli.serve import serve

    setup_logging()
    stepline = _app(root, dev=False, admin_token=os.environ.get("STEPLINE_ADMIN_TOKEN") or None, **options)
    asyncio.run(serve(stepline, host, port, reload=False, fd=fd, grace=grace, banner=fd is None))


@app.command("worker", hidden=True)
def worker(
    fd: Annotated[int, typer.Option(help="The listening socket, inherited from the supervisor.")],
    root: DirOption = Path("."),
    store: StoreOption = None,
    grace: float = 30.0,
    keep_traces: KeepOption = None,
    max_traces_mb: TraceCapOption = None,
    max_body: MaxBodyOption = None,
    allowed_host: HostsOption = None,
    role: RoleOption = None,
) -> None:
    """One worker process of `stepline start --workers N` (started by it, not by hand)."""
    from stepline.cli.workers import die_with_parent

    die_with_parent()
    options = _store_options(store, keep_traces, max_traces_mb) | _http_options(max_body, allowed_host)
    if role is not None:
        options["role"] = _role(role)
    with _in_project(root) as project_root:
        _serve_start(project_root, "", 0, options, grace, fd=fd)


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
    """Emit an event to a running server, or run it locally with --local.

    With --local, every delivery that failed while it ran is listed, and the exit code is 1 when any went
    to the dead letters."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        console.print(f"[red]--data is not JSON:[/] {exc}. Example: --data '{{\"id\": 1}}'")
        raise typer.Exit(2) from None
    if local:
        with _in_project(root) as project_root:
            result = asyncio.run(_emit_local(project_root, topic, payload))
        _report_local(topic, result, as_json_)
        return
    load_env(root.resolve())  # the project's .env may hold the STEPLINE_ADMIN_TOKEN its server runs with
    token = os.environ.get("STEPLINE_ADMIN_TOKEN")
    headers = {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/__stepline/api/emit",
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
        print_json(result)
        return
    _print_emitted(topic, result)


def _print_emitted(topic: str, result: dict[str, Any]) -> None:
    subs = ", ".join(result["subscribers"]) or "[yellow]no subscriber[/]"
    console.print(f"[green]emitted[/] {topic} → {subs}  [dim]trace {result['traceId']}[/]")


async def _emit_local(root: Path, topic: str, data: Any) -> dict[str, Any]:
    setup_logging()
    stepline = _app(root, dev=True, role="all")  # it runs what it emits, here
    records: asyncio.Queue[TraceRecord] = asyncio.Queue()  # unbounded: no record of the run is dropped
    async with stepline.lifespan():
        # Every record, not only this trace's: leftover events in the database run here too, and their
        # failures happened during this run as much as the new event's.
        unsubscribe = stepline.engine.subscribe(records)
        try:
            event = await stepline.emit(topic, data)
            await stepline.settle()
        finally:
            unsubscribe()
    failures: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    suspended: dict[str, dict[str, Any]] = {}  # delivery id -> its run, while it waits (durable handlers)
    while not records.empty():
        r = records.get_nowait()
        if r.kind == "end" and r.data.get("status") == "suspended":
            suspended[r.data["delivery_id"]] = {"step": r.step, "runId": r.data["delivery_id"], **r.data}
        elif r.kind == "start" and "delivery_id" in r.data:
            suspended.pop(r.data["delivery_id"], None)  # it ran again (woken, or its time came)
        elif r.kind == "end" and "delivery_id" in r.data and r.data.get("status") != "ok":
            failures.append(
                {
                    "step": r.step,
                    "traceId": r.trace_id,
                    "deliveryId": r.data["delivery_id"],
                    "attempt": r.data.get("attempt"),
                    "error": r.data.get("error") or r.data.get("status"),
                }
            )
        elif r.kind == "dead_letter":
            dead.append(
                {
                    "step": r.step,
                    "traceId": r.trace_id,
                    "deliveryId": r.data.get("delivery_id"),
                    "attempts": r.data.get("attempts"),
                    "error": r.data.get("error"),
                }
            )
    return {
        "traceId": event.trace_id,
        "eventId": event.id,
        "subscribers": [s.name for s in stepline.project.subscribers(topic)],
        "failures": failures,
        "deadLetters": dead,
        "suspended": [
            {"step": v["step"], "runId": v["runId"], "waiting": v.get("waiting")} for v in suspended.values()
        ],
    }


def _report_local(topic: str, result: dict[str, Any], as_json_: bool) -> None:
    """What `emit --local` ran into: failed attempts (retried or not), and deliveries that went to the dead
    letters, the one outcome that exits 1 (a failed attempt that a retry fixed is not a failure of the run)."""
    dead = result["deadLetters"]
    if as_json_:
        print_json(result)
    else:
        _print_emitted(topic, result)
        # A delivery's last failed attempt is said by its dead-letter line; the attempts before it are not.
        last = {(d["deliveryId"], d["attempts"]) for d in dead}
        for f in result["failures"]:
            if (f["deliveryId"], f["attempt"]) in last:
                continue
            attempt = f" (attempt {f['attempt']})" if f.get("attempt") else ""
            console.print(f"  [yellow]failed[/] {f['step']}{attempt}: {escape(str(f['error']))}")
        for w in result["suspended"]:
            shown = f"[dim](stepline runs show {w['runId']})[/]"
            console.print(f"  [yellow]suspended[/] {w['step']}: {escape(waiting_text(w))}  {shown}")
        for d in dead:
            attempts = f"{d['attempts']} attempt{'' if d['attempts'] == 1 else 's'}"
            console.print(
                f"  [red]dead letter[/] {d['step']} after {attempts}: {escape(str(d['error']))}"
                f"  [dim](stepline dlq show {d['deliveryId']})[/]"
            )
        if dead:
            console.print(
                f"[red]{len(dead)} {'delivery' if len(dead) == 1 else 'deliveries'} went to the dead letters.[/]"
                " Fix the cause (or the event data), then `stepline dlq replay ID` or `--all`."
            )
    if dead:
        raise typer.Exit(1)


@app.command()
def graph(
    root: DirOption = Path("."),
    flow: Annotated[str | None, typer.Option(help="Only this flow (and flows nested in it).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, mermaid or json.")] = "text",
) -> None:
    """The flow graph: steps and the topics between them."""
    with _in_project(root) as project_root:
        project = _load(project_root)
    if fmt == "mermaid":
        print_machine(mermaid(project, flow))
    elif fmt == "json":
        print_json(as_json(project, flow))
    elif fmt == "text":
        out.print(text_tree(project, flow))
    else:
        console.print(f"[red]unknown format {fmt!r}[/]; use text, mermaid or json")
        raise typer.Exit(2)


@app.command()
def routes(root: DirOption = Path("."), as_json_: JsonOption = False) -> None:
    """The HTTP routes of the API steps."""
    with _in_project(root) as project_root:
        project = _load(project_root)
    rows: list[dict[str, Any]] = []
    for step in sorted(project.api_steps, key=lambda s: (s.config.path, s.name)):
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
        print_json(rows)
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
    with _in_project(root) as root:
        try:
            project = load_project(root)
        except ProjectLoadError as exc:
            problems += exc.problems
        try:
            load_settings(root)
        except ProjectLoadError as exc:
            problems += exc.problems
    if problems or project is None:
        if as_json_:
            print_json({"ok": False, "problems": [p.to_dict() for p in problems]})
        else:
            print_problems(problems, f"[bold red]The project at {root} cannot load:[/]")
        raise typer.Exit(1) from None
    if as_json_:
        print_json({"ok": True, "steps": len(project.steps), "problems": [p.to_dict() for p in project.warnings]})
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
def mcp(
    root: DirOption = Path("."), store: StoreOption = None, engine: EngineOption = None, db: DbOption = None
) -> None:
    """Serve the API steps and topics that [mcp] in stepline.toml lists as MCP tools over stdin/stdout."""
    from stepline.cli.mcp import serve_stdio

    setup_logging()  # to stderr: stdout carries the protocol
    options = _store_options(store_url(store, engine, db))
    with _in_project(root) as project_root:
        stepline = _app(project_root, dev=False, role="all", **options)
        asyncio.run(serve_stdio(stepline))


@app.command("eval")
def eval_(
    name: Annotated[str | None, typer.Argument(help="One eval (its file name in evals/, without .yaml).")] = None,
    root: DirOption = Path("."),
    as_json_: JsonOption = False,
) -> None:
    """Run the evals in evals/ through the real flow; exit 1 when a gate fails (for CI)."""
    with _in_project(root) as project_root:
        _run_evals(project_root, name, as_json_)


def _run_evals(root: Path, name: str | None, as_json_: bool) -> None:
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
        print_json([r.to_dict() for r in runs])
    if any(r.gate_failures for r in runs):
        raise typer.Exit(1)


def main() -> None:
    app()


app.add_typer(dlq_app, name="dlq")
app.add_typer(runs_app, name="runs")
app.add_typer(traces_app, name="traces")
app.add_typer(state_app, name="state")
app.command("approvals")(approvals)
