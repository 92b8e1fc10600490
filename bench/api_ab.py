"""API overhead, A/B: Stepline's GET /ping against FastAPI's, in alternating rounds on the same machine.

    python bench/api_ab.py [--rounds 6] [--seconds 5] [--before PATH ...]

Both servers stay up; each round runs wrk (2 threads, 32 connections) against one, then the other, so a
change in the machine's speed lands on both. Each --before runs another Stepline from another checkout
(`git worktree add /tmp/before <rev>`), its `src/` first on the path: a change measured against the code
before it, in the same run. Prints each round and the medians; FastAPI's venv is run.py's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from _common import free_port, http_ok, spawn, stop, wait_for, wrk
from fastapi_driver import APP as FASTAPI_APP
from run import SYSTEMS, venv_python
from stepline_driver import STEPS

PING_STEP = STEPS["ping_step.py"]

console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--before", type=Path, action="append", default=[], help="another Stepline checkout to measure beside this one"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stepline-api-ab-"))
    fastapi_python = venv_python(next(s for s in SYSTEMS if s.key == "fastapi"))
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        for name, src in [*((path.name, path / "src") for path in args.before), ("stepline", None)]:
            project = work / name
            (project / "steps").mkdir(parents=True)
            (project / "steps" / "ping_step.py").write_text(PING_STEP.lstrip())
            port = free_port()
            env = {"PYTHONPATH": str(src)} if src else None
            command = [sys.executable, "-m", "stepline", "start", "--dir", str(project), "--port", str(port)]
            proc = spawn([*command, "--host", "127.0.0.1", "--workers", "1"], work / f"{name}.log", env=env)
            servers[name] = (f"http://127.0.0.1:{port}/ping", proc)
        (work / "app.py").write_text(FASTAPI_APP)
        port = free_port()
        uvicorn = str(Path(fastapi_python).parent / "uvicorn")
        command = [uvicorn, "app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        servers["fastapi"] = (
            f"http://127.0.0.1:{port}/ping",
            spawn([*command, "--no-access-log"], work / "fastapi.log", cwd=work),
        )
        for url, _ in servers.values():
            wait_for(lambda url=url: http_ok(url), 60, url)
            wrk(url, 1)  # warm up

        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for n in range(1, args.rounds + 1):
            for name, (url, _) in servers.items():
                rounds[name].append(wrk(url, args.seconds))
            line = ", ".join(f"{name} {rounds[name][-1]['rps']:,.0f}" for name in servers)
            console.print(f"round {n}: {line} requests/s")
    finally:
        for _, proc in servers.values():
            stop(proc)

    table = Table(title=f"GET /ping, wrk -t2 -c32, {args.rounds} rounds of {args.seconds:g} s: median (min - max)")
    for column in ["", "requests/s", "p50 ms", "p99 ms", "FastAPI / this, per round"]:
        table.add_column(column, justify="right")
    for name, results in rounds.items():
        cells = []
        for key in ("rps", "p50_ms", "p99_ms"):
            values = [r[key] for r in results]
            cells.append(f"{statistics.median(values):,.2f} ({min(values):,.2f} - {max(values):,.2f})")
        ratios = [f["rps"] / r["rps"] for f, r in zip(rounds["fastapi"], results, strict=True)]
        cells.append(f"{statistics.median(ratios):.2f}x ({min(ratios):.2f} - {max(ratios):.2f})")
        table.add_row(name, *cells)
    console.print(table)


if __name__ == "__main__":
    main()
