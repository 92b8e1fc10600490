"""Stepline: `stepline start --workers N` on its embedded SQLite store, durable (synchronous=NORMAL); or, with
`--store redis`, on the machine's Redis (no AOF there, as Celery's), one `--role api` process and one
`--role worker --workers N` process."""

from __future__ import annotations

import sqlite3
import sys
import time
import uuid
from pathlib import Path

import httpx2 as httpx
import redis
from _common import (
    HERE,
    Sampler,
    arguments,
    emit_result,
    free_port,
    http_ok,
    http_served,
    latency_ms,
    redis_pid,
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


class Sqlite:
    """What the workloads read of the store, from the SQLite file."""

    def __init__(self, root: Path) -> None:
        self.db = root / ".stepline" / "stepline.db"

    def count(self, group: str) -> int:
        return count(self.db, group)

    def values(self, group: str) -> dict[str, float]:
        rows = query(self.db, f"SELECT key, value FROM state WHERE grp = '{group}'")
        return {str(k): float(v) for k, v in rows}  # type: ignore[arg-type]

    def close(self) -> None:
        pass


class Redis:
    """The same, from Redis: the state group `g` is the hash `{prefix}:s:g` (src/stepline/adapters/redis)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.client = redis.Redis()

    def count(self, group: str) -> int:
        return int(self.client.hlen(f"{{{self.prefix}}}:s:{group}"))

    def values(self, group: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.client.hgetall(f"{{{self.prefix}}}:s:{group}").items()}

    def close(self) -> None:
        keys = list(self.client.scan_iter(match=f"{{{self.prefix}}}:*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])
        self.client.close()


def main() -> None:
    args = arguments(lambda p: p.add_argument("--store", choices=["sqlite", "redis"], default="sqlite"))
    root = args.workdir / "project"
    (root / "steps").mkdir(parents=True)
    for name, source in STEPS.items():
        (root / "steps" / name).write_text(source.lstrip())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stepline = str(Path(sys.executable).parent / "stepline")
    start = [stepline, "start", "--dir", str(root), "--host", "127.0.0.1"]
    launched = time.monotonic()
    store: Sqlite | Redis
    if args.store == "redis":
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        store = Redis(prefix)
        where = ["--store", f"redis://127.0.0.1:6379/0?prefix={prefix}&volatile=true"]
        procs = [
            spawn([*start, "--port", str(port), *where, "--role", "api"], args.workdir / "api.log"),
            spawn(
                [*start, "--port", str(free_port()), *where, "--role", "worker", "--workers", str(args.workers)],
                args.workdir / "worker.log",
            ),
        ]
        broker = [redis_pid()]  # the system's cost includes its store's
    else:
        store = Sqlite(root)
        procs = [spawn([*start, "--port", str(port), "--workers", str(args.workers)], args.workdir / "server.log")]
        broker = []
    pids = [p.pid for p in procs]
    try:
        wait_for(lambda: http_ok(f"{url}/ping"), 60, "the first request")
        startup = time.monotonic() - launched
        time.sleep(1.0)
        idle = rss_mb(*pids)

        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(args.hops):
                client.post(f"/hop/{i}").raise_for_status()
                wait_for(lambda i=i: store.count("hops") > i, 10, "a hop", interval=0.0005)
        hops = list(store.values("hops").values())

        api = wrk(f"{url}/ping", args.api_seconds)

        sampler = Sampler(*pids)
        chain = run_chains(
            httpx,
            url,
            args.chains,
            lambda: store.count("done"),
            lambda: store.values("done"),
            sampler,
            timeout=30,
            interval=0.02,
            cpu_of=(*pids, *broker),
        )
    finally:
        for proc in procs:
            stop(proc)
        store.close()
    result = {
        "api": api,
        "chain": chain,
        "hop": latency_ms(hops),
        "startup_s": startup,
        "rss_idle_mb": idle,
        "rss_loaded_mb": sampler.peak,
    }
    if args.store == "sqlite":  # the example app's start-up is a property of the package, measured once
        result["startup_example_s"] = example_startup(stepline, args.workdir)
    emit_result(result)


if __name__ == "__main__":
    main()
