"""Benchmark: the three-step chain on the SQLite engine, with 1 and 2 workers.

    python bench/chain.py [--chains 5000] [--runs 3] [--workers 1 2] [--sync normal|full] [--json out.json]
                          [--before PATH ...]

Each run starts a real `stepline start --workers N` on a fresh project and database, sends the chains
(POST /chains/{id} -> A -> B -> C) from 32 concurrent HTTP clients, and waits until every chain is done.
It prints chains per second, the emit-to-handler latency of one hop (loaded, and unloaded: one chain
at a time), and request-to-completion latency, as the median of the runs with min and max.
Each --before runs another Stepline from another checkout (`git worktree add /tmp/before <rev>`), its
`src/` first on the path, in the same run, alternating with this one run by run: a change measured
against the code before it. This is a benchmark, not a test: it prints figures and fails on nothing but errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
from rich.console import Console
from rich.table import Table

STEPLINE = str(Path(sys.executable).parent / "stepline")
console = Console()

# Each step stamps the event with the time it emitted it; the next one measures how long the hop took.
STEPS = {
    "start_step.py": """
import time
config = {"type": "api", "name": "StartChain", "path": "/chains/{id}", "method": "POST", "emits": ["chain.a"]}

async def handler(req, ctx):
    now = time.time()
    await ctx.emit("chain.a", {"id": req.path_params["id"], "t0": now, "t": time.time(), "hops": []})
    return {"status": 202, "body": {"traceId": ctx.trace_id}}
""",
    "a_step.py": """
import time
config = {"type": "event", "name": "A", "subscribes": ["chain.a"], "emits": ["chain.b"]}

async def handler(input, ctx):
    hops = input["hops"] + [time.time() - input["t"]]
    await ctx.emit("chain.b", {**input, "hops": hops, "t": time.time()})
""",
    "b_step.py": """
import time
config = {"type": "event", "name": "B", "subscribes": ["chain.b"], "emits": ["chain.c"]}

async def handler(input, ctx):
    hops = input["hops"] + [time.time() - input["t"]]
    await ctx.emit("chain.c", {**input, "hops": hops, "t": time.time()})
""",
    "c_step.py": """
import time
config = {"type": "event", "name": "C", "subscribes": ["chain.c"]}

async def handler(input, ctx):
    now = time.time()
    hops = input["hops"] + [now - input["t"]]
    await ctx.state.increment("count", "done")
    await ctx.state.set("done", input["id"], {"hops": hops, "total": now - input["t0"], "end": now})
""",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def count_done(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT value FROM state WHERE grp = 'count' AND key = 'done'").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def results(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [json.loads(v) for (v,) in conn.execute("SELECT value FROM state WHERE grp = 'done'")]
    finally:
        conn.close()


def wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/__stepline/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def post_chains(url: str, ids: range, concurrency: int) -> float:
    """POST every chain; returns the seconds it took to send them all."""
    todo = list(ids)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def sender() -> None:
            while todo:
                chain = todo.pop()
                response = await client.post(f"/chains/{chain}")
                response.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started


def one_run(workers: int, chains: int, sync: str, unloaded: int, src: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp:
        root = Path(tmp)
        (root / "steps").mkdir()
        for name, source in STEPS.items():
            (root / "steps" / name).write_text(source.lstrip())
        db = root / ".stepline" / "stepline.db"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                STEPLINE,
                "start",
                "--dir",
                str(root),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--sync",
                sync,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(src)} if src is not None else None,
        )
        try:
            wait(lambda: healthy(url), 30, "the server")
            # unloaded: one chain at a time, to see a hop's latency with nothing queued
            with httpx.Client(base_url=url, timeout=10) as client:
                for i in range(unloaded):
                    client.post(f"/chains/warm-{i}").raise_for_status()
                    wait(lambda i=i: count_done(db) >= i + 1, 10, "an unloaded chain", interval=0.001)
            base = count_done(db)
            started = time.time()
            send_seconds = asyncio.run(post_chains(url, range(chains), 32))
            wait(lambda: count_done(db) >= base + chains, 600, "every chain")
            done = results(db)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    warm = [d for d in done if d["end"] < started]
    loaded = [d for d in done if d["end"] >= started]
    finished = max(d["end"] for d in loaded)
    hops = [h for d in loaded for h in d["hops"]]
    quiet_hops = [h for d in warm for h in d["hops"]]
    totals = [d["total"] for d in loaded]
    ms = 1000.0
    return {
        "chains_per_s": chains / (finished - started),
        "requests_per_s": chains / send_seconds,
        "hop_p50_ms": percentile(hops, 0.5) * ms,
        "hop_p99_ms": percentile(hops, 0.99) * ms,
        "unloaded_hop_p50_ms": percentile(quiet_hops, 0.5) * ms if quiet_hops else float("nan"),
        "unloaded_hop_p99_ms": percentile(quiet_hops, 0.99) * ms if quiet_hops else float("nan"),
        "chain_p50_ms": percentile(totals, 0.5) * ms,
        "chain_p99_ms": percentile(totals, 0.99) * ms,
    }


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(terse=True),
    }


METRICS = [
    ("chains_per_s", "chains/s", "{:,.0f}"),
    ("requests_per_s", "requests/s (sending)", "{:,.0f}"),
    ("hop_p50_ms", "hop p50, loaded (ms)", "{:.2f}"),
    ("hop_p99_ms", "hop p99, loaded (ms)", "{:.2f}"),
    ("unloaded_hop_p50_ms", "hop p50, unloaded (ms)", "{:.2f}"),
    ("unloaded_hop_p99_ms", "hop p99, unloaded (ms)", "{:.2f}"),
    ("chain_p50_ms", "request to done p50 (ms)", "{:.1f}"),
    ("chain_p99_ms", "request to done p99 (ms)", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sync", choices=["normal", "full"], default="normal")
    parser.add_argument("--unloaded", type=int, default=200, help="chains sent one at a time first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--before", type=Path, action="append", default=[], help="another Stepline checkout to measure beside this one"
    )
    args = parser.parse_args()

    info = machine()
    console.print(
        f"[bold]Three-step chain on SQLite[/] · {args.chains} chains x {args.runs} runs · "
        f"32 concurrent clients · synchronous={args.sync.upper()}"
    )
    console.print(
        f"[dim]{info['cpu']} · {info['cores']} cores · Python {info['python']} · "
        f"SQLite {info['sqlite']} · {info['os']}[/]"
    )
    systems: dict[str, Path | None] = {path.name: path.resolve() / "src" for path in args.before}
    systems["stepline"] = None
    columns = [(name, workers) for workers in args.workers for name in systems]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {column: [] for column in columns}
    for n in range(args.runs):
        for name, workers in columns:  # alternating, so that a change in the machine's speed lands on all
            result = one_run(workers, args.chains, args.sync, args.unloaded, systems[name])
            runs[(name, workers)].append(result)
            console.print(
                f"  {name}, {workers} worker(s), run {n + 1}: {result['chains_per_s']:,.0f} chains/s, "
                f"hop p50 {result['hop_p50_ms']:.2f} ms",
                style="dim",
            )

    table = Table(title="median (min - max)", header_style="bold")
    table.add_column("")
    for name, workers in columns:
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        table.add_column(label if len(systems) == 1 else f"{name}, {label}", justify="right")
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for key, label, fmt in METRICS:
        row = [label]
        for name, workers in columns:
            values = [r[key] for r in runs[(name, workers)]]
            med, low, high = statistics.median(values), min(values), max(values)
            column = str(workers) if len(systems) == 1 else f"{name}/{workers}"
            summary.setdefault(column, {})[key] = {"median": med, "min": low, "max": high}
            row.append(f"{fmt.format(med)} ({fmt.format(low)} - {fmt.format(high)})")
        table.add_row(*row)
    console.print(table)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "settings": vars(args) | {"json": str(args.json), "before": [str(p) for p in args.before]},
                    "results": summary,
                    "runs": {f"{name}/{workers}": r for (name, workers), r in runs.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
