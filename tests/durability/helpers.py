from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx

STEPLINE = str(Path(sys.executable).parent / "stepline")


def start_server(root: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`stepline start` in a process group of its own, so a test can kill it and its workers at once."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [STEPLINE, "start", "--dir", str(root), "--host", "127.0.0.1", "--port", str(port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.TransportError, sqlite3.OperationalError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def healthy(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/__stepline/health", timeout=2).status_code == 200


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


def query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
