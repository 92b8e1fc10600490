"""Stepline on its embedded SQLite engine: `stepline start --workers N`, durable (synchronous=NORMAL)."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import httpx2 as httpx
from _common import (
    HERE,
    Sampler,
    arguments,
    emit_result,
    free_port,
    http_ok,
    http_served,
    latency_ms,
    rss_mb,
    run_chains,
    spawn,
    stop,
    wait_for,
    wrk,
)

EXAMPLE = HERE.parent.parent / "examples" / "financial-report"

STEPS = {
    "ping_step.py": """
config = {"type": "api", "name": "Ping", "path": "/ping", "method": "GET"}

async def handler(req, ctx):
    return {"status": 200, "body": {"ok": True}}
""",
    "hop_api_step.py": """
import time
config = {"type": "api", "name": "HopApi", "path": "/hop/{id}", "method": "POST", "emits": ["hop"]}

async def handler(req, ctx):
    await ctx.emit("hop", {"id": req.path_params["id"], "t": time.time()})
    return {"status": 202}
""",
    "hop_step.py": """
import time
config = {"type": "event", "name": "Hop", "subscribes": ["hop"]}

async def handler(input, ctx):
    started = time.time()
    await ctx.state.set("hops", input["id"], started - input["t"])
""",
    "chain_api_step.py": """
config = {"type": "api", "name": "StartChain", "path": "/chains/{id}", "method": "POST", "emits": ["chain.a"]}

async def handler(req, ctx):
    await ctx.emit("chain.a", {"id": req.path_params["id"]})
    return {"status": 202}
""",
    "a_step.py": """
config = {"type": "event", "name": "A", "subscribes": ["chain.a"], "emits": ["chain.b"]}

async def handler(input, ctx):
    await ctx.emit("chain.b", input)
""",
    "b_step.py": """
config = {"type": "event", "name": "B", "subscribes": ["chain.b"], "emits": ["chain.c"]}

async def handler(input, ctx):
    await ctx.emit("chain.c", input)
""",
    "c_step.py": """
import time
config = {"type": "event", "name": "C", "subscribes": ["chain.c"]}

async def handler(input, ctx):
    await ctx.state.increment("counter", "chains")
    await ctx.state.set("done", input["id"], time.time())
""",
}


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(db: Path, group: str) -> int:
    try:
        return int(query(db, f"SELECT COUNT(*) FROM state WHERE grp = '{group}'")[0][0])  # type: ignore[call-overload]
    except sqlite3.OperationalError:
        return 0


def example_startup(stepline: str, workdir: Path) -> float:
    """Launch to first served request for the financial-report example (the issue's start-up target)."""
    port = free_port()
    launched = time.monotonic()
    command = [stepline, "start", "--dir", str(EXAMPLE), "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn([*command, "--db", str(workdir / "example.db")], workdir / "example.log")
    try:
        wait_for(lambda: http_served(f"http://127.0.0.1:{port}/reports/none"), 60, "the example's first request")
        return time.monotonic() - launched
    finally:
        stop(proc)


def main() -> None:
    args = arguments()
    root = args.workdir / "project"
    (root / "steps").mkdir(parents=True)
    for name, source in STEPS.items():
        (root / "steps" / name).write_text(source.lstrip())
    db = root / ".stepline" / "stepline.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stepline = str(Path(sys.executable).parent / "stepline")
    launched = time.monotonic()
    proc = spawn(
        [
            stepline,
            "start",
            "--dir",
            str(root),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        args.workdir / "server.log",
    )
    try:
        wait_for(lambda: http_ok(f"{url}/ping"), 60, "the first request")
        startup = time.monotonic() - launched
        time.sleep(1.0)
        idle = rss_mb(proc.pid)

        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(args.hops):
                client.post(f"/hop/{i}").raise_for_status()
                wait_for(lambda i=i: count(db, "hops") > i, 10, "a hop", interval=0.0005)
        hops = [float(v) for (v,) in query(db, "SELECT value FROM state WHERE grp = 'hops'")]  # type: ignore[arg-type]

        api = wrk(f"{url}/ping", args.api_seconds)

        sampler = Sampler(proc.pid)
        chain = run_chains(
            httpx,
            url,
            args.chains,
            lambda: count(db, "done"),
            lambda: {str(k): float(v) for k, v in query(db, "SELECT key, value FROM state WHERE grp = 'done'")},  # type: ignore[arg-type]
            sampler,
            timeout=30,
            interval=0.02,
        )
    finally:
        stop(proc)
    emit_result(
        {
            "api": api,
            "chain": chain,
            "hop": latency_ms(hops),
            "startup_s": startup,
            "startup_example_s": example_startup(stepline, args.workdir),
            "rss_idle_mb": idle,
            "rss_loaded_mb": sampler.peak,
        }
    )


if __name__ == "__main__":
    main()
