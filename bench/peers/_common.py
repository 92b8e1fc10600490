"""What every driver shares. Standard library only: drivers run inside each system's own virtualenv."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def arguments(configure: Callable[[argparse.ArgumentParser], object] | None = None) -> argparse.Namespace:
    """The options run.py passes every driver; `configure` adds a driver's own."""
    # SIGTERM (from run.py when a driver overruns) must unwind through the drivers' `finally: stop(...)`,
    # or the server it started lives on, in a session of its own, and skews every later figure.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser()
    if configure is not None:
        configure(parser)
    parser.add_argument("--chains", type=int, default=5000)
    parser.add_argument("--hops", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--api-seconds", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, required=True)
    return parser.parse_args()


def emit_result(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def http_served(url: str) -> bool:
    """Whether the server answered at all, 4xx included (a 404 from a handler is a served request)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 0.5) * 1000, "p99_ms": percentile(values, 0.99) * 1000}


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    kids = [int(p) for p in text.split()]
    return kids + [g for k in kids for g in _children(k)]


def rss_mb(*pids: int) -> float:
    """Resident memory of these processes and all their descendants, in MB."""
    total = 0
    for pid in {p for root in pids for p in [root, *_children(root)]}:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(*pids: int) -> float:
    """CPU time (user + system) so far of these processes and all their descendants, in seconds."""
    total = 0
    for pid in {p for root in pids for p in [root, *_children(root)]}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICK


def redis_pid(port: int = 6379) -> int:
    """The process id of the Redis server on `port` (its CPU counts in a system's cost when it is the broker)."""
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "info", "server"], capture_output=True, text=True, check=True
    ).stdout
    return int(next(line.split(":")[1] for line in out.splitlines() if line.startswith("process_id:")))


def wrk(url: str, seconds: float, connections: int = 32) -> dict[str, float]:
    """GET `url` from `connections` connections for `seconds`: requests/s and latency percentiles."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match is None:
            raise ValueError(f"no {label}% line in wrk output:\n{out}")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{out}")
    timeouts = re.search(r"Socket errors:.*timeout (\d+)", out)
    if errors or (timeouts and int(timeouts.group(1))):
        raise RuntimeError(f"failed or timed-out requests:\n{out}")
    return {"rps": float(rps.group(1)), "p50_ms": ms("50"), "p99_ms": ms("99")}


class Sampler:
    """The highest RSS seen while a workload runs (call `sample` from its waiting loop)."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.peak = 0.0
        self._next = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 0.2
            self.peak = max(self.peak, rss_mb(*self.pids))


def spawn(
    command: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,  # a server that reads its terminal (Motia's build does) must not wait on ours
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
            proc.wait()


def median_of(values: list[float]) -> float:
    return statistics.median(values)


def python() -> str:
    return sys.executable


async def post_chains(httpx: Any, url: str, ids: list[str], sent: dict[str, float], timeout: float = 60) -> None:
    """POST /chains/{id} for every id from 32 concurrent senders, noting when each was sent.

    `httpx` is the HTTP client module of the driver's environment (httpx or httpx2: the same API)."""
    todo = list(ids)
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def sender() -> None:
            while todo:
                cid = todo.pop()
                sent[cid] = time.time()
                (await client.post(f"/chains/{cid}")).raise_for_status()

        await asyncio.gather(*(sender() for _ in range(32)))


def run_chains(
    httpx: Any,
    url: str,
    chains: int,
    done_count: Callable[[], int],
    done_times: Callable[[], dict[str, float]],
    sampler: Sampler,
    *,
    timeout: float,
    interval: float = 0.05,
    limit: float = 1800,
    cpu_of: tuple[int, ...] = (),
) -> dict[str, float]:
    """The chain workload: POST `chains` chains from 32 senders (in a thread), sample RSS until
    `done_count()` reaches `chains`, then throughput and request-to-done latency from `done_times()`
    (chain id -> the time it was done). With `cpu_of`, also the CPU seconds those processes (and their
    descendants) spent per 1,000 chains."""
    sent: dict[str, float] = {}
    ids = [str(i) for i in range(chains)]
    cpu_before = cpu_seconds(*cpu_of)
    started = time.time()
    thread = threading.Thread(target=lambda: asyncio.run(post_chains(httpx, url, ids, sent, timeout=timeout)))
    thread.start()
    deadline = time.monotonic() + limit
    while (finished := done_count()) < chains:
        sampler.sample()
        time.sleep(interval)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{finished} of {chains} chains done after {limit:.0f} s")
    thread.join()
    cpu = (cpu_seconds(*cpu_of) - cpu_before) * 1000 / chains
    done = done_times()
    result = {"throughput": chains / (max(done.values()) - started), **latency_ms([done[i] - sent[i] for i in ids])}
    return result | ({"cpu_per_1000": cpu} if cpu_of else {})
