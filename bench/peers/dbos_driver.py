"""DBOS Transact on the local PostgreSQL: a workflow of three steps, started from a FastAPI endpoint.

Durability as run here: every workflow and step is checkpointed in PostgreSQL (fsync on, the server's
default), so an accepted workflow survives a crash and resumes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import psycopg
from _common import (
    Sampler,
    arguments,
    emit_result,
    free_port,
    http_ok,
    latency_ms,
    rss_mb,
    run_chains,
    spawn,
    stop,
    wait_for,
    wrk,
)

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "stepline_bench_dbos"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"

APP = f"""
import queue
import time
from contextlib import asynccontextmanager

import psycopg
from dbos import DBOS
from fastapi import FastAPI

DBOS(config={{"name": "bench", "system_database_url": "{URL}", "log_level": "WARNING"}})


@asynccontextmanager
async def lifespan(app):
    DBOS.launch()
    yield


app = FastAPI(lifespan=lifespan)
# A few shared connections: DBOS runs steps on many threads, and a connection per thread ran
# PostgreSQL out of connections (max_connections 100) under the 5,000-chain load.
pool = queue.SimpleQueue()
for _ in range(8):
    pool.put(psycopg.connect("{URL}", autocommit=True))


def record(sql, params):
    conn = pool.get()
    try:
        conn.execute(sql, params)
    finally:
        pool.put(conn)


@DBOS.step()
def hop_step(cid, t):
    record("INSERT INTO bench_hops VALUES (%s, %s)", (cid, time.time() - t))


@DBOS.workflow()
def hop(cid, t):
    hop_step(cid, t)


@DBOS.step()
def a(cid):
    return cid


@DBOS.step()
def b(cid):
    return cid


@DBOS.step()
def c(cid):
    record("INSERT INTO bench_done VALUES (%s, %s)", (cid, time.time()))


@DBOS.workflow()
def chain(cid):
    a(cid)
    b(cid)
    c(cid)


@app.get("/ping")
async def ping():
    return {{"ok": True}}


@app.post("/chains/{{cid}}", status_code=202)
def start_chain(cid: str):
    DBOS.start_workflow(chain, cid)
    return {{}}


@app.post("/hop/{{cid}}", status_code=202)
def start_hop(cid: str):
    DBOS.start_workflow(hop, cid, time.time())
    return {{}}
"""


_reader: list[psycopg.Connection[tuple[object, ...]]] = []


def count(table: str) -> int:
    # One connection for all the polling: a connection per poll (every 0.5 ms while waiting for a hop)
    # left PostgreSQL with more exiting backends than max_connections allows.
    if not _reader:
        _reader.append(psycopg.connect(URL, autocommit=True))
    return int(_reader[0].execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def main() -> None:
    args = arguments()
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_done (id TEXT PRIMARY KEY, ts DOUBLE PRECISION)")
        conn.execute("CREATE TABLE bench_hops (id TEXT PRIMARY KEY, latency DOUBLE PRECISION)")
    (args.workdir / "app.py").write_text(APP)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    launched = time.monotonic()
    proc = spawn(
        [uvicorn, "app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        args.workdir / "server.log",
        cwd=args.workdir,
    )
    try:
        wait_for(lambda: http_ok(f"{url}/ping"), 120, "the first request")
        startup = time.monotonic() - launched
        time.sleep(1.0)
        idle = rss_mb(proc.pid)
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(args.hops):
                client.post(f"/hop/{i}").raise_for_status()
                wait_for(lambda i=i: count("bench_hops") > i, 10, "a hop", interval=0.0005)
        with psycopg.connect(URL) as conn:
            hops = [float(v) for (v,) in conn.execute("SELECT latency FROM bench_hops").fetchall()]
        api = wrk(f"{url}/ping", args.api_seconds)

        sampler = Sampler(proc.pid)

        def done_times() -> dict[str, float]:
            with psycopg.connect(URL) as conn:
                return {k: float(v) for k, v in conn.execute("SELECT id, ts FROM bench_done").fetchall()}

        result = run_chains(httpx, url, args.chains, lambda: count("bench_done"), done_times, sampler, timeout=60)
    finally:
        stop(proc)
    emit_result(
        {
            "api": api,
            "chain": result,
            "hop": latency_ms(hops),
            "startup_s": startup,
            "rss_idle_mb": idle,
            "rss_loaded_mb": sampler.peak,
        }
    )


if __name__ == "__main__":
    main()
