"""Benchmark: the heartbeat's expiry of idempotency keys, and what it costs the writes around it.

    python bench/idempotency.py [--keys 3000000] [--live 0.1] [--seconds 10] [--pace-ms 2] [--batch N]
                                [--before PATH ...]

For each Stepline measured (this checkout, and each --before: another checkout, `git worktree add
/tmp/before <rev>`, its `src/` first on the path), in a process of its own and in the same run:

1. a new database file gets that code's own schema (the adapters open it), then `--keys` idempotency keys,
   written straight into it: a `--live` fraction still within their 24-hour window, the rest expired at
   random times over the last day (keys in insertion order, expiries not: as order ids and the like);
2. the adapters open it again, and the SQLite writer thread's heartbeat (every second, in a write
   transaction of its own) is timed: how long each run holds the write lock, from BEGIN to COMMIT. The
   first run, at open, is shown apart: before the batch bound it deleted every expired key at once;
3. after that first run, a small write (`ctx.state.set`, through the adapters) is due every `--pace-ms`
   for `--seconds`, whether or not the last one is done (an open loop, as requests arrive): the latency of
   each from when it was due, p50 and p99, takes in every write a heartbeat held up.

`--batch N` sets the measured code's bound on keys expired per heartbeat (`_EXPIRE_KEYS`), to try another.

`--live 0.99` is the steady state of the report that led to the index (3 million keys within their
window, scanned every second). A benchmark, not a test: it prints figures and fails on nothing but errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
THIS = Path(__file__).resolve().parent.parent / "src"
WINDOW = 86400.0


def fill(db: Path, keys: int, live: float, seed: int = 1) -> dict[str, Any]:
    """`keys` idempotency keys into the file, in transactions of 200,000; the WAL checkpointed into it."""
    rnd = random.Random(seed)
    now = time.time()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    started = time.perf_counter()
    alive = 0
    for lo in range(0, keys, 200_000):
        rows = []
        for i in range(lo, min(keys, lo + 200_000)):
            if rnd.random() < live:
                alive += 1
                rows.append((f"order-{i:012d}", now + rnd.uniform(60, WINDOW)))
            else:
                rows.append((f"order-{i:012d}", now - rnd.uniform(1, WINDOW)))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO idempotency_keys (key, expires_at) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    indexes = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'idempotency_keys'")]
    conn.close()
    fd = os.open(db, os.O_RDONLY)  # on disk now: the measured process's first fsync must not write the fill back
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {
        "fill_s": time.perf_counter() - started,
        "live": alive,
        "expired": keys - alive,
        "indexes": indexes,
        "mb": db.stat().st_size / 1e6,
    }


def count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone()[0])
    finally:
        conn.close()


async def measure(db: Path, seconds: float, pace: float) -> dict[str, Any]:
    from stepline.adapters.sqlite import open_sqlite

    adapters = open_sqlite(db)
    database = adapters.state._db  # type: ignore[attr-defined]
    runs: list[float] = []  # seconds each heartbeat held the write lock, BEGIN to COMMIT
    ran = threading.Event()
    run_periodic = database._run_periodic

    def timed(conn: sqlite3.Connection, final: bool = False) -> None:
        due = any(p.due <= time.monotonic() for p in database._periodic)
        started = time.perf_counter()
        run_periodic(conn, final)
        if due and not final:
            runs.append(time.perf_counter() - started)
            ran.set()

    # The writer thread looks the method up at every call; it waits up to a second before its first heartbeat.
    database._run_periodic = timed
    checkpoints: list[float] = []
    checkpoint = database._checkpoint

    def timed_checkpoint(conn: sqlite3.Connection) -> None:
        started = time.perf_counter()
        checkpoint(conn)
        checkpoints.append(time.perf_counter() - started)

    database._checkpoint = timed_checkpoint
    try:
        await asyncio.to_thread(ran.wait)
        first = runs[0]
        after_first = count(db)

        latencies: list[float] = []

        async def write(i: int) -> None:
            started = time.perf_counter()
            await adapters.state.set("bench", f"k{i % 1000}", {"n": i})
            latencies.append(time.perf_counter() - started)

        # Open loop: a write starts every `pace` seconds whether or not the last one is done, as requests
        # arrive, so every write a heartbeat holds up counts (not only the one that was waiting).
        writes = []
        start = time.perf_counter()
        i = 0
        while (due := start + i * pace) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            writes.append(asyncio.ensure_future(write(i)))
            i += 1
        await asyncio.gather(*writes)
        later = runs[1:]
    finally:
        await adapters.close()
    latencies.sort()
    return {
        "first_ms": first * 1000,
        "keys_after_first": after_first,
        "heartbeats": len(later),
        "hb_p50_ms": statistics.median(later) * 1000 if later else float("nan"),
        "hb_max_ms": max(later) * 1000 if later else float("nan"),
        "writes": len(latencies),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
        "keys_at_end": count(db),
        "checkpoints": len(checkpoints),
        "checkpoint_max_ms": max(checkpoints, default=0.0) * 1000,
    }


def child(args: argparse.Namespace) -> None:
    """One Stepline, in this process: make the file, fill it, measure; one JSON line on stdout."""
    import stepline.adapters.sqlite as adapter
    from stepline.adapters.sqlite import open_sqlite

    if args.batch and hasattr(adapter, "_EXPIRE_KEYS"):
        adapter._EXPIRE_KEYS = args.batch

    db = Path(args.db)

    async def schema() -> None:
        adapters = open_sqlite(db)
        for part in (adapters.queue, adapters.state, adapters.traces, adapters.cron):
            await part.close()

    asyncio.run(schema())
    result = {"code": str(Path(adapter.__file__).resolve().parents[2]), "batch": getattr(adapter, "_EXPIRE_KEYS", None)}
    result |= fill(db, args.keys, args.live)
    result |= asyncio.run(measure(db, args.seconds, args.pace_ms / 1000))
    print("RESULT " + json.dumps(result), flush=True)


def run(name: str, src: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    db = work / name / "stepline.db"
    db.parent.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", "--db", str(db), "--keys", str(args.keys), "--live", str(args.live)]
    command += ["--seconds", str(args.seconds), "--pace-ms", str(args.pace_ms), "--batch", str(args.batch)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    console.print(f"[dim]{name}: filling {args.keys:,} keys and measuring ({src})[/]")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keys", type=int, default=3_000_000)
    parser.add_argument("--live", type=float, default=0.1, help="fraction of keys still within their window")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the writer writes")
    parser.add_argument("--pace-ms", type=float, default=2.0, help="a write is due every this many ms")
    parser.add_argument("--batch", type=int, default=0, help="try another bound on keys expired per heartbeat")
    parser.add_argument(
        "--before", type=Path, action="append", default=[], help="another Stepline checkout to measure beside this one"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    work = Path(tempfile.mkdtemp(prefix="stepline-idempotency-"))
    results = {}
    for name, src in [*((path.name, path / "src") for path in args.before), ("this", THIS)]:
        results[name] = run(name, src, work, args)
        for suffix in ("", "-wal", "-shm"):
            (work / name / f"stepline.db{suffix}").unlink(missing_ok=True)

    table = Table(
        title=f"{args.keys:,} idempotency keys ({args.live:.0%} live), a state.set every {args.pace_ms:g} ms "
        f"for {args.seconds:g} s"
    )
    table.add_column("")
    for name in results:
        table.add_column(name, justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("index on expires_at", lambda r: "yes" if "idempotency_expiry" in r["indexes"] else "no"),
        ("keys expired per heartbeat, at most", lambda r: f"{r['batch']:,}" if r["batch"] else "all"),
        ("file after filling, MB", lambda r: f"{r['mb']:,.0f}"),
        ("expired / live keys", lambda r: f"{r['expired']:,} / {r['live']:,}"),
        ("first heartbeat (at open), ms", lambda r: f"{r['first_ms']:,.1f}"),
        ("keys left after it", lambda r: f"{r['keys_after_first']:,}"),
        ("later heartbeats: runs", lambda r: f"{r['heartbeats']}"),
        ("  write lock held, median ms", lambda r: f"{r['hb_p50_ms']:,.1f}"),
        ("  write lock held, max ms", lambda r: f"{r['hb_max_ms']:,.1f}"),
        ("writes", lambda r: f"{r['writes']:,}"),
        ("  latency p50 ms", lambda r: f"{r['p50_ms']:.2f}"),
        ("  latency p99 ms", lambda r: f"{r['p99_ms']:.2f}"),
        ("  latency max ms", lambda r: f"{r['max_ms']:.2f}"),
        ("keys left at the end", lambda r: f"{r['keys_at_end']:,}"),
        ("idle WAL checkpoints: runs", lambda r: f"{r['checkpoints']}"),
        ("  longest, ms", lambda r: f"{r['checkpoint_max_ms']:,.1f}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results.values()))
    console.print(table)
    console.print(
        f"[dim]{platform.platform()}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs; code: " + "; ".join(f"{n} {r['code']}" for n, r in results.items()) + "[/]"
    )


if __name__ == "__main__":
    main()
