"""The `stepline` command as a user runs it, in a subprocess: what it prints into a pipe, what its docs say,
what `emit --local` reports, and how `start` binds and starts its workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from stepline.testing import serve

from .conftest import ProjectFactory, free_port

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
EXAMPLE = REPO / "examples" / "financial-report"


# -- running the real command ------------------------------------------------------------------------


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell with stdout piped: no COLUMNS (rich would take it as the width)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_") and k not in ("COLUMNS", "LINES")}
    env["PYTHONUNBUFFERED"] = "1"
    return env | (extra or {})


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepline", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def running(
    *args: str, cwd: Path, port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`stepline ARGS` as a server, until it answers /__stepline/health on `port`; SIGTERM afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepline", *args], cwd=cwd, env=cli_env(env), stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"stepline {' '.join(args)} exited with {proc.returncode}:\n{log.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/__stepline/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"stepline {' '.join(args)} did not answer on :{port}:\n{log.read_text()}")
                time.sleep(0.1)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # the command name (field 2) may hold spaces and parentheses: the fields after the last ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- tables and trees into a pipe (item 7) --------------------------------------------------------------

FAILING = {
    "steps/api_step.py": """
        config = {"type": "api", "name": "Order", "path": "/orders", "method": "POST", "emits": ["order.placed"]}
        async def handler(req, ctx):
            await ctx.emit("order.placed", req.body)
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/ship_with_a_rather_long_step_name_step.py": """
        config = {"type": "event", "name": "ShipWithTheCourierOfTheMonthOrElse", "subscribes": ["order.placed"],
                  "infrastructure": {"queue": {"maxRetries": 0}}}
        async def handler(input, ctx):
            raise ValueError(f"no courier for {input['sku']}, and a long explanation of why there is none")
    """,
}


def test_traces_and_dlq_tables_keep_ids_whole_when_piped(make_project: ProjectFactory) -> None:
    root = make_project(FAILING)

    async def order() -> str:
        async with serve(root) as app:
            response = await app.client.post("/orders", json={"sku": "tea-1"})
            await app.settle()
            return str(response.json()["traceId"])

    trace_id = asyncio.run(order())
    [dead] = json.loads(cli("dlq", "list", "--json", cwd=root).stdout)

    traces = cli("traces", cwd=root)
    assert traces.returncode == 0, traces.stderr
    [row] = [line for line in traces.stdout.splitlines() if trace_id[:8] in line]
    assert trace_id in row and "POST /orders" in row and "1 failed" in row  # whole, every column

    listed = cli("dlq", "list", cwd=root)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if dead["id"][:8] in line]
    assert dead["id"] in row and "ShipWithTheCourierOfTheMonthOrElse" in row and "order.placed" in row

    tree = cli("traces", "show", trace_id, cwd=root)
    assert f"trace {trace_id}" in tree.stdout
    assert any(f"stepline dlq show {dead['id']})" in line for line in tree.stdout.splitlines())


# -- every flag documented (item 7) -------------------------------------------------------------------

COMMANDS = [
    "create",
    "dev",
    "start",
    "emit",
    "graph",
    "routes",
    "check",
    "dlq list",
    "dlq show",
    "dlq replay",
    "dlq purge",
    "traces",
    "traces show",
    "traces stop",
    "traces resume",
    "state get",
    "state set",
    "state delete",
    "approvals",
    "eval",
    "mcp",
]


def test_cli_md_documents_every_flag_help_shows(tmp_path: Path) -> None:
    helps = {
        command: subprocess.Popen(
            [sys.executable, "-m", "stepline", *command.split(), "--help"],
            cwd=tmp_path,
            env=cli_env({"COLUMNS": "200"}),
            stdout=subprocess.PIPE,
            text=True,
        )
        for command in COMMANDS
    }
    docs = (DOCS / "cli.md").read_text().splitlines()
    missing = {}
    for command, proc in helps.items():
        shown, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, command
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", shown)) - {"--help"}
        rows = [line for line in docs if re.match(rf"\| `stepline {re.escape(command)}(?= [\[A-Z-]|`)", line)]
        assert len(rows) == 1, f"docs/cli.md has {len(rows)} rows for `stepline {command}`"
        documented = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", rows[0]))
        if flags - documented:
            missing[command] = sorted(flags - documented)
    assert not missing, f"flags --help shows that docs/cli.md does not: {missing}"
    assert {"dev", "start", "dlq list", "traces show"} <= set(helps)  # the commands of the trial


def test_state_delete_has_help_text(tmp_path: Path) -> None:
    group = cli("state", "--help", cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    [line] = [line for line in group.splitlines() if re.search(r"│ delete\b", line)]
    assert re.search(r"│ delete\s+\w+", line), line
    alone = cli("state", "delete", "--help", cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    assert "Delete one value" in alone


# -- emit --local reports what failed (item 8) ----------------------------------------------------------

STRICT = {
    "steps/needs_id_step.py": """
        config = {"type": "event", "name": "NeedsId", "subscribes": ["thing.happened"],
                  "input": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}
        async def handler(input, ctx): ...
    """,
    "steps/flaky_step.py": """
        config = {"type": "event", "name": "Flaky", "subscribes": ["thing.happened"],
                  "infrastructure": {"queue": {"maxRetries": 2, "backoff": {"initial": 0.01, "jitter": 0}}}}
        async def handler(input, ctx):
            if await ctx.state.increment("flaky", "runs") == 1:
                raise ConnectionError("the first try always fails")
    """,
}


def test_emit_local_exits_1_and_names_the_dead_letters(make_project: ProjectFactory) -> None:
    root = make_project(STRICT)
    result = cli("emit", "--local", "--topic", "thing.happened", "--data", "{}", cwd=root)
    assert result.returncode == 1, result.stderr
    [dead] = json.loads(cli("dlq", "list", "--json", cwd=root).stdout)
    assert dead["step"] == "NeedsId"
    assert "dead letter NeedsId after 1 attempt: the input of step 'NeedsId'" in result.stderr
    assert f"stepline dlq show {dead['id']}" in result.stderr
    assert "1 delivery went to the dead letters" in result.stderr

    as_json = cli("emit", "--local", "--topic", "thing.happened", "--data", "{}", "--json", cwd=root)
    assert as_json.returncode == 1
    answer = json.loads(as_json.stdout)
    assert [d["step"] for d in answer["deadLetters"]] == ["NeedsId"]
    assert answer["deadLetters"][0]["traceId"] == answer["traceId"]


def test_emit_local_lists_an_attempt_a_retry_fixed_and_exits_0(make_project: ProjectFactory) -> None:
    root = make_project(STRICT)
    result = cli("emit", "--local", "--topic", "thing.happened", "--data", '{"id": "t-1"}', cwd=root)
    assert result.returncode == 0, result.stderr
    assert "failed Flaky (attempt 1): ConnectionError: the first try always fails" in result.stderr
    assert "dead letter" not in result.stderr
    assert json.loads(cli("dlq", "list", "--json", cwd=root).stdout) == []


def _docs_emit_lines() -> list[str]:
    """The `stepline state set` and `stepline emit` lines of the emit example in docs/cli.md."""
    text = (DOCS / "cli.md").read_text()
    section = text[text.index("## emit") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)]
    return [line.strip() for line in block.strip().splitlines()]


def test_docs_emit_examples_run_clean_on_the_example_project(tmp_path: Path) -> None:
    project = tmp_path / "financial-report"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".stepline", "output", "outbox", "__pycache__"))
    port = free_port()
    lines = _docs_emit_lines()
    assert [line.split()[:3] for line in lines] == [["stepline", "state", "set"], ["stepline", "emit", "--topic"]]
    workbench = (DOCS / "admin-api.md").read_text()
    put, post = (
        re.search(rf"curl -s -X{method} localhost:3000(\S+) -d '(.+)'", workbench) for method in ("PUT", "POST")
    )
    assert put is not None and post is not None

    with running("dev", "--dir", str(project), "--port", str(port), cwd=tmp_path, port=port, log=tmp_path / "dev.log"):
        # cli.md, as typed (the server is on another port than the example's :3000)
        state_set, emit = (shlex.split(line)[1:] for line in lines)
        assert cli(*state_set, cwd=project).returncode == 0
        sent = cli(*emit, "--url", f"http://127.0.0.1:{port}", cwd=project)
        assert sent.returncode == 0, sent.stderr
        # admin-api.md's curl lines, as HTTP requests
        base = f"http://127.0.0.1:{port}"
        assert httpx.put(base + put.group(1), content=put.group(2)).status_code < 300
        assert httpx.post(base + post.group(1), content=post.group(2)).status_code == 202
        report_ids = [json.loads(emit[emit.index("--data") + 1])["reportId"]]
        report_ids.append(json.loads(post.group(2))["data"]["reportId"])
        assert len(set(report_ids)) == 2  # two reports, one from each page

        def drafted() -> bool:
            statuses = [httpx.get(f"{base}/reports/{r}").json().get("status") for r in report_ids]
            return statuses == ["awaiting_approval"] * 2

        wait_for(drafted, "both reports to reach awaiting_approval")
        assert httpx.get(f"{base}/__stepline/api/dead-letters").json() == []

    local = cli(*emit, "--local", cwd=project)
    assert local.returncode == 0, local.stderr
    assert json.loads(cli("dlq", "list", "--json", cwd=project).stdout) == []


# -- start: where it listens, and what its workers get (items 9, 10) -----------------------------------

HELLO = {
    "steps/hello_step.py": """
        import os
        config = {"type": "api", "name": "Hello", "path": "/hello", "method": "GET"}
        async def handler(req, ctx):
            return {"pid": os.getpid(), "cwd": os.getcwd()}
    """,
}


def listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, _remote, state = line.split()[1:4]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


def test_start_listens_on_127_0_0_1_unless_host_says_otherwise(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(HELLO)
    port = free_port()
    with running("start", "--dir", str(root), "--port", str(port), cwd=root, port=port, log=tmp_path / "a.log"):
        assert listening(port) == {"0100007F"}  # 127.0.0.1
    assert "http://127.0.0.1:" in (tmp_path / "a.log").read_text()

    port = free_port()
    args = ("start", "--dir", str(root), "--port", str(port), "--host", "0.0.0.0")
    with running(*args, cwd=root, port=port, log=tmp_path / "b.log"):
        assert listening(port) == {"00000000"}  # every interface, as a container needs


def test_keep_traces_reaches_every_worker(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(HELLO)
    port = free_port()
    args = ("start", "--dir", str(root), "--port", str(port), "--workers", "2", "--keep-traces", "0.5")
    with running(*args, cwd=root, port=port, log=tmp_path / "start.log") as supervisor:
        wait_for(lambda: len(children(supervisor.pid)) == 2, "two workers")
        for worker in children(supervisor.pid):
            command = cmdline(worker)
            assert "worker" in command, command
            assert command[command.index("--keep-traces") + 1] == "0.5", command
    assert "sqlite:///.stepline/stepline.db" in (tmp_path / "start.log").read_text()  # the banner names the store


def test_the_banner_names_the_streams_and_where_to_watch_them(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(
        {**HELLO, "steps/progress_stream.py": 'config = {"name": "progress", "schema": {"type": "object"}}'}
    )
    port = free_port()
    with running("start", "--dir", str(root), "--port", str(port), cwd=root, port=port, log=tmp_path / "s.log"):
        pass
    assert f"streams: progress · ws://127.0.0.1:{port}/__stepline/streams" in (tmp_path / "s.log").read_text()
