"""Celery with Redis as the broker: a chain of three tasks; prefork pool, one process per core.

Durability as run here: Redis keeps nothing on disk (the machine's Redis runs with persistence off),
and Celery acknowledges a task when it starts (its default), so a crash can lose work."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import redis
from _common import (
    Sampler,
    arguments,
    cpu_seconds,
    emit_result,
    latency_ms,
    redis_pid,
    rss_mb,
    spawn,
    stop,
    wait_for,
)
from celery import chain

DB = 14
TASKS = f"""
import time

import redis
from celery import Celery

app = Celery("bench", broker="redis://127.0.0.1:6379/{DB}")
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
r = redis.Redis(db={DB})


@app.task
def ping():
    r.set("bench:ping", 1)


@app.task
def hop(cid, t):
    r.hset("bench:hops", cid, time.time() - t)


@app.task
def a(cid):
    return cid


@app.task
def b(cid):
    return cid


@app.task
def c(cid):
    r.hset("bench:done", cid, time.time())
"""


def main() -> None:
    args = arguments()
    (args.workdir / "tasks.py").write_text(TASKS)
    sys.path.insert(0, str(args.workdir))
    os.chdir(args.workdir)
    import tasks  # type: ignore[import-not-found]

    r = redis.Redis(db=DB)
    r.flushdb()
    celery = str(Path(sys.executable).parent / "celery")
    launched = time.monotonic()
    proc = spawn(
        [
            celery,
            "-A",
            "tasks",
            "worker",
            "--loglevel",
            "warning",
            "--concurrency",
            str(os.cpu_count()),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        args.workdir / "worker.log",
        cwd=args.workdir,
    )
    try:
        tasks.ping.delay()
        wait_for(lambda: r.get("bench:ping") is not None, 60, "the first task")
        startup = time.monotonic() - launched
        time.sleep(1.0)
        idle = rss_mb(proc.pid)

        for i in range(args.hops):
            tasks.hop.delay(str(i), time.time())
            wait_for(lambda i=i: r.hlen("bench:hops") > i, 10, "a hop", interval=0.0005)
        hops = [float(v) for v in r.hvals("bench:hops")]

        sampler = Sampler(proc.pid)
        sent: dict[str, float] = {}
        ids = [str(i) for i in range(args.chains)]
        todo = list(ids)
        # Its cost: the workers, the broker, and this process, which enqueues the chains (Stepline's API
        # process does that part there, and counts in its figure).
        measured = (proc.pid, redis_pid(), os.getpid())
        cpu_before = cpu_seconds(*measured)
        started = time.time()

        def sender() -> None:
            while todo:
                try:
                    cid = todo.pop()
                except IndexError:
                    return
                sent[cid] = time.time()
                chain(tasks.a.si(cid), tasks.b.si(cid), tasks.c.si(cid)).apply_async()

        threads = [threading.Thread(target=sender) for _ in range(32)]
        for t in threads:
            t.start()
        while r.hlen("bench:done") < args.chains:
            sampler.sample()
            time.sleep(0.02)
        for t in threads:
            t.join()
        cpu = (cpu_seconds(*measured) - cpu_before) * 1000 / args.chains
        done = {k.decode(): float(v) for k, v in r.hgetall("bench:done").items()}
        finished = max(done.values())
        result = {
            "throughput": args.chains / (finished - started),
            **latency_ms([done[i] - sent[i] for i in ids]),
            "cpu_per_1000": cpu,
        }
    finally:
        stop(proc)
        r.flushdb()
    emit_result(
        {
            "chain": result,
            "hop": latency_ms(hops),
            "startup_s": startup,
            "rss_idle_mb": idle,
            "rss_loaded_mb": sampler.peak,
        }
    )


if __name__ == "__main__":
    main()
