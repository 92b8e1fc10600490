"""`stepline create`: a project that runs at once, whose own tests pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

from .conftest import free_port

STEPLINE = str(Path(sys.executable).parent / "stepline")


def create(where: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEPLINE, "create", name], cwd=where, capture_output=True, text=True, timeout=60)


def test_create_writes_a_project(tmp_path: Path) -> None:
    result = create(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "demo"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "steps/daily_summary_step.py",
        "steps/hello/count_step.py",
        "steps/hello/get_greeting_step.py",
        "steps/hello/greet_step.py",
        "steps/hello/hello_api_step.py",
        "tests/test_hello_flow.py",
    ]
    assert (root / "README.md").read_text().startswith("# demo\n")
    assert 'name = "demo"' in (root / "pyproject.toml").read_text()
    assert not [p for p in root.rglob("*") if p.is_file() and "{{name}}" in p.read_text()]
    assert ".stepline/" in (root / ".gitignore").read_text().splitlines()  # the dev database stays out of git
    assert "cd demo" in result.stderr and "stepline dev" in result.stderr
    check = subprocess.run([STEPLINE, "check", "--dir", str(root)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "ok: 5 steps, 0 warnings" in check.stderr


def test_the_created_projects_own_tests_pass(tmp_path: Path) -> None:
    assert create(tmp_path, "demo").returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path / "demo",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_created_project_type_checks(tmp_path: Path) -> None:
    # The template is excluded from the repository's own mypy run (a created project's `steps` is not part of
    # the stepline package), so its typed handlers are checked here, as the user would check them.
    assert create(tmp_path, "demo").returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--explicit-package-bases", "--cache-dir", os.devnull, "."],
        cwd=tmp_path / "demo",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in 6 source files" in result.stdout


def test_stepline_dev_serves_the_created_project(tmp_path: Path) -> None:
    assert create(tmp_path, "demo").returncode == 0
    port = free_port()
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [STEPLINE, "dev", "--port", str(port)],
            cwd=tmp_path / "demo",
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/openapi.json").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        trace_id = httpx.post(f"{base}/hello", json={"name": "Ada"}).json()["traceId"]
        deadline = time.monotonic() + 10
        while (greeting := httpx.get(f"{base}/hello/{trace_id}")).status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert greeting.json() == {"greeting": "Hello, Ada!"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()
    assert (tmp_path / "demo" / ".stepline" / "stepline.db").exists()


def test_create_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = create(tmp_path, "taken")
    assert result.returncode == 1
    assert "already exists and is not empty" in result.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
