"""stepline.toml: every option of `dev`, `start` and `Stepline(...)` can be set in the file; what is given
on the command line, in the environment or in code wins over it; a mistake names the key and the fix. And
docs/configuration.md lists every key, option and variable there is."""

from __future__ import annotations

import inspect
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import typer.main
from typer.testing import CliRunner

from stepline import Stepline
from stepline._errors import ProjectLoadError
from stepline.cli import app as cli_app
from stepline.steps.settings import _MODELS, load_settings

from .conftest import ProjectFactory, free_port

REPO = Path(__file__).resolve().parents[1]
HELLO = """
config = {"type": "api", "name": "Hello", "path": "/hello", "method": "POST"}
async def handler(req, ctx):
    return {"size": len(req.raw_body)}
"""
TICK = """
config = {"type": "event", "name": "Tick", "subscribes": ["tick"]}
async def handler(input, ctx):
    await ctx.state.set("ticks", "last", input)
"""


def test_every_table_is_read_and_defaults_hold_without_a_file(tmp_path: Path) -> None:
    defaults = load_settings(tmp_path, environ={})
    assert (defaults.server.host, defaults.server.port, defaults.server.workers) == ("127.0.0.1", 3000, 1)
    assert (defaults.server.role, defaults.server.grace) == ("all", 30.0)
    assert (defaults.http.max_body, defaults.http.body_timeout) == (1024 * 1024, 30.0)
    assert (defaults.engine.concurrency, defaults.engine.idempotency_window) == (64, 86400.0)
    assert (defaults.traces.keep_days, defaults.traces.max_mb, defaults.store.url) == (7.0, 1024.0, None)
    (tmp_path / "stepline.toml").write_text(
        '[server]\nhost = "0.0.0.0"\nport = 8080\nworkers = 3\nrole = "worker"\ngrace = 5\n'
        '[http]\nmax_body = "4MB"\nbody_timeout = 9\nallowed_hosts = ["app.internal"]\n'
        'cors_origins = ["https://app.example.com/"]\n'
        '[store]\nurl = "sqlite:///data/app.db"\n[engine]\nconcurrency = 8\nidempotency_window = 60\n'
        "[traces]\nkeep_days = 2\nmax_mb = 0\n"
    )
    s = load_settings(tmp_path, environ={})
    assert (s.server.host, s.server.port, s.server.workers, s.server.role, s.server.grace) == (
        "0.0.0.0",
        8080,
        3,
        "worker",
        5.0,
    )
    assert (s.http.max_body, s.http.body_timeout, s.http.allowed_hosts) == (4 * 1024 * 1024, 9.0, ["app.internal"])
    assert s.http.cors_origins == ["https://app.example.com"]
    assert (s.store.url, s.engine.concurrency, s.engine.idempotency_window) == ("sqlite:///data/app.db", 8, 60.0)
    assert (s.traces.keep_days, s.traces.max_mb) == (2.0, 0.0)


@pytest.mark.parametrize(
    ("toml", "field", "fix"),
    [
        ('[server]\nport = "http"', "server.port", "a port from 0 to 65535"),
        ("[server]\nport = 70000", "server.port", "a port from 0 to 65535"),
        ('[server]\nrole = "both"', "server.role", '"all", "api" or "worker"'),
        ('[server]\nhots = "0.0.0.0"', "server.hots", "[server] takes host, port, workers, role, grace"),
        ('[http]\nmax_body = "lots"', "http.max_body", 'a size, e.g. max_body = "4MB"'),
        ('[http]\ncors_origins = ["app.example.com"]', "http.cors_origins", "a list of origins"),
        ("[engine]\nconcurrency = 0", "engine.concurrency", "1 or more"),
        ("[traces]\nkeep_days = -1", "traces.keep_days", "days, 0.01 or more"),
        ("[sever]\nport = 1", "sever", "stepline.toml has the tables [llm], [mcp], [streams], [server]"),
        ('[server]\nadmin_token = "s3cret"', "server.admin_token", "STEPLINE_ADMIN_TOKEN"),
    ],
)
def test_a_mistake_names_the_key_and_the_fix(tmp_path: Path, toml: str, field: str, fix: str) -> None:
    (tmp_path / "stepline.toml").write_text(toml + "\n")
    with pytest.raises(ProjectLoadError) as err:
        load_settings(tmp_path, environ={})
    [problem] = err.value.problems
    assert (problem.file, problem.field) == ("stepline.toml", field)
    assert fix in problem.fix


def test_stepline_takes_the_file_and_what_code_gives_wins(make_project: ProjectFactory, monkeypatch) -> None:
    monkeypatch.delenv("STEPLINE_STORE", raising=False)
    root = make_project(
        {
            "steps/hello_step.py": HELLO,
            "stepline.toml": '[store]\nurl = "memory://"\n[engine]\nconcurrency = 3\nidempotency_window = 60\n'
            '[http]\nmax_body = "2KB"\nbody_timeout = 4\nallowed_hosts = ["app.internal"]\n'
            '[traces]\nkeep_days = 2\nmax_mb = 0\n[server]\nrole = "api"\n',
        }
    )
    with pytest.raises(ValueError, match="role='api'"):  # the file's role, on the file's memory store
        Stepline(root)
    sl = Stepline(root, role="all")
    assert sl.adapters.url == "memory://"
    assert (sl.engine.concurrency, sl.engine.idempotency_window) == (3, 60.0)
    assert (sl.asgi.max_body, sl.asgi.body_timeout, sl.asgi.allowed_hosts) == (2048, 4.0, {"app.internal"})
    assert (sl.trace_retention, sl.trace_max_bytes) == (2 * 86400, None)
    given = Stepline(
        root,
        role="all",
        store="memory://",
        concurrency=5,
        idempotency_window=7,
        max_body=10,
        body_timeout=1,
        trace_retention=60,
        trace_max_bytes=1000,
        allowed_hosts=["other"],
    )
    assert (given.engine.concurrency, given.engine.idempotency_window, given.asgi.max_body) == (5, 7, 10)
    assert (given.asgi.body_timeout, given.trace_retention, given.trace_max_bytes) == (1, 60, 1000)
    assert given.asgi.allowed_hosts == {"app.internal", "other"}  # allowances add up


def test_the_environment_store_wins_over_the_file(make_project: ProjectFactory, tmp_path: Path, monkeypatch) -> None:
    root = make_project({"steps/hello_step.py": HELLO, "stepline.toml": '[store]\nurl = "sqlite:///file.db"\n'})
    monkeypatch.delenv("STEPLINE_STORE", raising=False)
    assert Stepline(root).adapters.url.endswith("/file.db")
    monkeypatch.setenv("STEPLINE_STORE", "memory://")
    assert Stepline(root).adapters.url == "memory://"


def _start(root: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")} | {"NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepline", "start", "--dir", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    return proc, banner


def _wait(url: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_start_serves_as_the_file_says_and_its_options_win(make_project: ProjectFactory) -> None:
    port = free_port()
    root = make_project(
        {
            "steps/hello_step.py": HELLO,
            "stepline.toml": f'[server]\nport = {port}\nworkers = 2\ngrace = 3\n[http]\nmax_body = "100"\n'
            '[store]\nurl = "sqlite:///data/app.db"\n',
        }
    )
    proc, banner = _start(root)
    try:
        assert "2 workers" in banner and f":{port}" in banner and "data/app.db" in banner, banner
        assert _wait(f"http://127.0.0.1:{port}/__stepline/live").status_code == 200
        assert httpx.post(f"http://127.0.0.1:{port}/hello", content=b"x" * 50).json() == {"size": 50}
        too_big = httpx.post(f"http://127.0.0.1:{port}/hello", content=b"x" * 101)
        assert too_big.status_code == 413
    finally:
        _stop(proc)
    assert (root / "data" / "app.db").exists()
    other = free_port()
    proc, banner = _start(root, "--port", str(other), "--workers", "1", "--max-body", "1KB")
    try:
        assert f":{other}" in banner and "workers" not in banner, banner
        _wait(f"http://127.0.0.1:{other}/__stepline/live")
        assert httpx.post(f"http://127.0.0.1:{other}/hello", content=b"x" * 1000).status_code == 200
    finally:
        _stop(proc)


def test_the_runtime_commands_read_the_store_the_file_names(make_project: ProjectFactory, monkeypatch) -> None:
    monkeypatch.delenv("STEPLINE_STORE", raising=False)
    # `start`'s role in the file: `emit --local` still runs what it emits (one process does everything)
    toml = '[store]\nurl = "sqlite:///data/app.db"\n[server]\nrole = "api"\n'
    root = make_project({"steps/tick_step.py": TICK, "stepline.toml": toml})
    runner = CliRunner()
    done = runner.invoke(cli_app, ["emit", "--local", "--dir", str(root), "--topic", "tick", "--data", "7"])
    assert done.exit_code == 0, done.output
    assert (root / "data" / "app.db").exists() and not (root / ".stepline").exists()
    got = runner.invoke(cli_app, ["state", "get", "ticks", "last", "--dir", str(root)])
    assert (got.exit_code, got.output.strip()) == (0, "7")


# -- the reference page is complete ---------------------------------------------------------------------

PAGE = REPO / "docs" / "configuration.md"


def _command(name: str) -> Any:
    group: Any = typer.main.get_command(cli_app)  # typer's own click: a group by its shape, not its class
    return group.commands[name]


def test_the_page_lists_every_key_of_every_table() -> None:
    text = PAGE.read_text()
    missing = []
    for table, model in _MODELS.items():
        if f"[{table}]" not in text:
            missing.append(f"[{table}]")
        for name in model.model_fields:
            if name != "api_key" and not re.search(rf"`(\[{table}\] )?{name}\b", text):
                missing.append(f"{table}.{name}")
    assert missing == []


def test_the_page_lists_every_option_of_dev_and_start_and_every_stepline_argument() -> None:
    text = PAGE.read_text()
    missing = []
    for name in ("dev", "start"):
        for param in _command(name).params:
            if getattr(param, "param_type_name", "") == "option" and not param.hidden:
                flag = max(param.opts, key=len)
                if f"`{flag}" not in text:
                    missing.append(f"stepline {name} {flag}")
    for name in inspect.signature(Stepline.__init__).parameters:
        if name not in ("self", "root", "engine", "database", "synchronous") and f"`{name}=" not in text:
            missing.append(f"Stepline({name}=)")
    assert missing == []


def test_the_page_lists_every_environment_variable_stepline_reads() -> None:
    text = PAGE.read_text()
    read = set()
    for path in (REPO / "src" / "stepline").rglob("*.py"):
        read |= set(re.findall(r'"((?:STEPLINE|OPENAI)_[A-Z_]+)"', path.read_text()))
    assert read, "no variable found: the pattern is wrong"
    assert sorted(v for v in read if f"`{v}`" not in text) == []
