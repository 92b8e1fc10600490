"""The deployment recipes of docs/production.md, run as far as this machine allows. Base images cannot be
pulled here, and there is no systemd to hand a unit to: so each recipe's own install and start commands
run in a fresh virtualenv, with the paths they name moved under a temporary folder, and the health and
readiness endpoints must answer as the page says, and SIGTERM must drain the server (exit 0)."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from .runner import REPO, free_base_port, newcomer_env, recipe

EXAMPLE = REPO / "examples" / "financial-report"
PAGE = REPO / "docs" / "production.md"


def _env(wheel_dir: Path) -> dict[str, str]:
    return newcomer_env(wheel_dir) | {"NO_COLOR": "1"}


def _run(command: str, cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"


def _copy_context(source: Path, target: Path) -> None:
    """`COPY . .`, leaving out what .dockerignore lists."""
    ignored = [line.strip() for line in (source / ".dockerignore").read_text().splitlines() if line.strip()]

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in ignored)]

    shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)


def _serve_and_check(argv: list[str], cwd: Path, env: dict[str, str], port: int, readiness: str | None) -> None:
    server = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/__stepline/live", timeout=2)
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, "the server did not answer within 60 s"
                time.sleep(0.2)
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        health = httpx.get(f"http://127.0.0.1:{port}/__stepline/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert health.json()["steps"] > 0 and health.json()["queue"]["dead"] == 0
        if readiness is not None:  # the image's own HEALTHCHECK command
            _run(readiness, cwd, env)
        posted = httpx.post(
            f"http://127.0.0.1:{port}/reports", json={"month": "2026-10", "requestedBy": "ana@example.com"}, timeout=5
        )
        assert posted.status_code == 202, posted.text
    finally:
        server.send_signal(signal.SIGTERM)  # `docker stop`, `systemctl stop`
        out, _ = server.communicate(timeout=45)
    assert server.returncode == 0, out


@pytest.mark.timeout(600)
def test_the_dockerfile_installs_starts_passes_its_health_check_and_drains(tmp_path: Path, wheel_dir: Path) -> None:
    root = tmp_path / "image"  # the image's / : /app, /data
    env = _env(wheel_dir)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    env["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{env['PATH']}"  # the image's python and pip
    port = free_base_port()

    def here(text: str) -> str:  # the image's absolute paths, under the temporary root; its port, a free one
        text = re.sub(r"(?<![\w/])/(app|data)\b|(?<=sqlite:///)/(app|data)\b", lambda m: f"{root}/{m[1] or m[2]}", text)
        return text.replace("3000", str(port))

    workdir = root
    command: list[str] | None = None
    healthcheck: str | None = None
    lines = (EXAMPLE / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "WORKDIR":
            workdir = Path(here(rest))
            workdir.mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            source, target = rest.split()
            if source == ".":
                _copy_context(EXAMPLE, workdir)
            else:
                shutil.copy(EXAMPLE / source, workdir / (source if target == "." else target))
        elif word == "RUN":
            _run(here(rest), workdir, env)
        elif word == "ENV":
            name, _, value = rest.partition("=")
            env[name] = here(value)
        elif word == "VOLUME":
            Path(here(rest)).mkdir(parents=True, exist_ok=True)
        elif word == "HEALTHCHECK":
            healthcheck = here(rest.split(" CMD ", 1)[1])
        elif word == "CMD":
            command = [here(part) for part in json.loads(rest)]
    assert command is not None and healthcheck is not None
    assert not (workdir / "tests").exists() and (workdir / "steps").is_dir()  # .dockerignore held
    _serve_and_check(command, workdir, env, port, healthcheck)
    assert (root / "data" / "stepline.db").exists()  # on the volume, not in the image's folder
    assert not (workdir / ".stepline").exists()


@pytest.mark.timeout(600)
def test_the_systemd_recipe_installs_and_its_unit_starts_and_drains(tmp_path: Path, wheel_dir: Path) -> None:
    srv = tmp_path / "srv"
    env = _env(wheel_dir)
    port = free_base_port()

    def here(text: str) -> str:
        return text.replace("/srv/", f"{srv}/").replace("3000", str(port))

    install = recipe(PAGE, "systemd-install").text
    cwd = REPO
    for line in install.splitlines():
        line = line.split("   #", 1)[0].strip()
        if line.startswith(("sudo useradd", "sudo chown")):
            continue  # a system user, and handing it the data: the test runs as whoever runs it
        _run(here(line.removeprefix("sudo ")), cwd, env)
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    unit.read_string((EXAMPLE / "deploy" / "stepline.service").read_text())
    service = unit["Service"]
    name, _, value = service["Environment"].partition("=")
    env[name] = here(value)
    assert float(service["TimeoutStopSec"]) > 30  # longer than the grace SIGTERM gives handlers
    _serve_and_check(shlex.split(here(service["ExecStart"])), Path(here(service["WorkingDirectory"])), env, port, None)
    assert (srv / "financial-report" / "data" / "stepline.db").exists()
