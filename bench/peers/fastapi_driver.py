"""Bare FastAPI on uvicorn (uvloop, httptools): the HTTP baseline. No queue, no state, no traces."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import Sampler, arguments, emit_result, free_port, http_ok, rss_mb, spawn, stop, wait_for, wrk

APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping():
    return {"ok": True}
"""


def main() -> None:
    args = arguments()
    (args.workdir / "app.py").write_text(APP)
    port = free_port()
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    launched = time.monotonic()
    proc = spawn(
        [uvicorn, "app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        args.workdir / "server.log",
        cwd=args.workdir,
    )
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), 60, "the first request")
        startup = time.monotonic() - launched
        time.sleep(1.0)
        idle = rss_mb(proc.pid)
        sampler = Sampler(proc.pid)
        api = wrk(f"http://127.0.0.1:{port}/ping", args.api_seconds)
        sampler.sample()
    finally:
        stop(proc)
    emit_result({"api": api, "startup_s": startup, "rss_idle_mb": idle, "rss_loaded_mb": max(sampler.peak, idle)})


if __name__ == "__main__":
    main()
