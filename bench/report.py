"""Turns the suite's results (JSON) into docs/benchmarks.md and the chart docs/benchmarks.png."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHART_VENV = ROOT / ".bench" / "venvs" / "chart"
PROFILING = Path(__file__).resolve().parent / "profiling.md"
SCALEOUT = Path(__file__).resolve().parent / "scaleout.md"

ROWS = [
    ("API: requests/s (32 connections)", "api.rps"),
    ("API: p50 / p99 ms", ("api.p50_ms", "api.p99_ms")),
    ("Chain: completed chains/s", "chain.throughput"),
    ("Chain: request to completion p50 / p99 ms", ("chain.p50_ms", "chain.p99_ms")),
    ("Chain: CPU s per 1,000 chains, all the system's processes", "chain.cpu_per_1000"),
    ("Single hop, unloaded: p50 / p99 ms", ("hop.p50_ms", "hop.p99_ms")),
    ("Idle RSS MB", "rss_idle_mb"),
    ("Loaded RSS MB", "rss_loaded_mb"),
    ("Launch to first request s", "startup_s"),
    ("Launch to first request, the example app s", "startup_example_s"),
]


def figure(value: float) -> str:
    """Three significant figures or so, whatever the scale: 6,512 requests/s, 86.4 chains/s, 0.52 ms."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _cell(summary: dict[str, Any], key: str | tuple[str, str]) -> str:
    if isinstance(key, tuple):
        parts = [_cell(summary, k) for k in key]
        return " / ".join(parts) if any(p != "n/a" for p in parts) else "n/a"
    s = summary.get(key)
    if s is None:
        return "n/a"
    return f"{figure(s['median'])} <sub>({figure(s['min'])}-{figure(s['max'])})</sub>"


def write_docs(results_json: Path, docs: Path) -> None:
    data = json.loads(results_json.read_text())
    results: dict[str, Any] = data["results"]
    m = data["machine"]
    keys = list(results)
    lines = [
        "# Benchmarks",
        "",
        f"Measured {data['date']} by `make bench` (`bench/run.py`), every system on the same machine in the same",
        "run: one after the other, each started fresh on 127.0.0.1 and stopped before the next. Each figure is the",
        f"median of {data['runs']} runs, with the min and max of those runs in small type.",
        "",
        f"**Machine**: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}. The load generators (wrk, the drivers' clients) run on the same cores.",
        "",
        "![Chain throughput and latency per system](benchmarks.png)",
        "",
        "## Results",
        "",
        "| | " + " | ".join(results[k]["label"] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(results[k]["summary"], key) for k in keys) + " |")
    separate = [results[k]["label"] for k in keys if results[k].get("separate_run")]
    if separate:
        lines += [
            "",
            f"*{', '.join(separate)}: measured in a second invocation on the same machine, the same day "
            "(`bench/run.py --systems ... --merge`), not in the same run.*",
        ]
    lines += ["", "## Against the targets", ""]
    lines += [f"- {line}" for line in data["ratios"]]
    lines += [
        "",
        "## The workloads",
        "",
        '1. **API overhead**: `GET /ping` returning `{"ok": true}`, `wrk -t2 -c32 -d5s --latency` (Motia: `-d30s`,',
        "   as its requests take seconds each under this load).",
        "2. **Three-step chain**: a request starts a chain of three steps; the last records that the chain is done.",
        "   Stepline: `POST /chains/{id}` (an API step) emits to event steps A, B and C; C increments a counter",
        "   and records the chain in state. Motia: the same four steps in JavaScript, and again in Python (Motia",
        "   runs both); C records the chain in Redis.",
        "   DBOS: `POST /chains/{id}` starts a workflow of three steps (`DBOS.start_workflow`). Celery:",
        "   `chain(a, b, c)` sent by the client. Temporal: the client starts a workflow of three activities.",
        "   32 concurrent senders; throughput is the chains divided by the time from the first request to the last",
        "   completion, latency is from a chain's request to its completion. Stepline on one worker is",
        "   saturated here: it takes requests about 20% faster than it completes chains (`bench/chain.py` prints",
        "   both rates), so a queue builds up during the burst and a chain's latency is mostly its wait in it;",
        "   two workers keep up with the senders, and the queue stays short.",
        "3. **Single hop, unloaded**: 200 times (Motia: 50), one at a time, the time from emitting (or starting a",
        "   workflow, or sending a task) to the handler (step, activity, task) starting.",
        "4. **Memory and start-up**: RSS of all the system's processes (the server, its workers; PostgreSQL and",
        "   Redis, shared services of the machine, not counted) one second after the first request succeeded,",
        "   and the highest RSS during the chain workload; the time from launching the system to its first",
        "   answered request (Celery: first task run; Temporal: server and worker up). For Stepline also the",
        "   financial-report example app (`stepline start --dir examples/financial-report`), to its first answer.",
        "",
        "5. **CPU per chain**: the CPU seconds (user + system) that all of a system's processes spent during the",
        "   chain workload, per 1,000 chains: its servers and workers, its broker or store when that is a server",
        "   (Redis, for Celery and Stepline on Redis), and for Celery the driver, which enqueues the chains",
        "   (Stepline's API process does that and counts). The load generator is not counted. On 2 cores this",
        "   is how scale-out is judged: more workers cannot add cores, only show what each chain costs.",
        "",
        "## Versions and durability settings",
        "",
        "| system | versions | chains per run | durability as run |",
        "|---|---|---|---|",
    ]
    for k in keys:
        r = results[k]
        lines.append(f"| {r['label']} | {r['versions']} | {r['chains']:,} | {r['durability']} |")
    if SCALEOUT.exists():  # hand-written: a measurement of the Redis columns in a run of their own
        lines += ["", *SCALEOUT.read_text().rstrip().splitlines()]
    if PROFILING.exists():  # hand-written: how a missed target was profiled and fixed, before and after
        lines += ["", *PROFILING.read_text().rstrip().splitlines()]
    failures = [(results[k]["label"], e) for k in keys for e in results[k]["errors"]]
    if failures:
        lines += ["", "## Runs that failed", ""]
        lines += [f"- {label}: `{error.splitlines()[-1] if error else '?'}`" for label, error in failures]
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        "make bench            # every system, 3 runs, 5,000 chains (Motia 50); installs what it needs",
        ".venv/bin/python bench/run.py --systems stepline-1,dbos --runs 5",
        ".venv/bin/python bench/run.py --chains-for temporal=1000   # fewer chains for a slow system",
        "```",
        "",
        "Each system is installed from the package registries into `.bench/venvs/<system>` (Motia with npm into",
        "`.bench/motia`); `wrk` from Debian.",
        "PostgreSQL and Redis are the machine's own services on their default ports.",
        "",
    ]
    (docs / "benchmarks.md").write_text("\n".join(lines))
    chart(results_json, docs / "benchmarks.png")


def chart(results_json: Path, out: Path) -> None:
    python = CHART_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CHART_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"], check=True
        )
    subprocess.run([str(python), str(Path(__file__).with_name("chart.py")), str(results_json), str(out)], check=True)
