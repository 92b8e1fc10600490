"""Benchmark: what durable handlers cost, on SQLite and on Redis.

    python bench/durable.py [--stores sqlite redis] [--steps 200] [--waits 200] [--runs 3]

- **A memoized step**: one run of a handler that makes `--steps` `ctx.step` calls of a trivial async function,
  against one that makes the same calls directly; the difference per call is what recording a step costs
  (one journal write). The same with a plain (sync) function, which ctx.step runs on a thread; and the
  replay (the handler run again, every step found in the journal).
- **Event to resumed handler**: `--waits` runs, one at a time, each suspended on `ctx.wait_for`; for each,
  the time from the emit of the matching event to the resumed handler starting (its first line, as it runs
  again from the top), p50 and p99.

Each figure is the median of `--runs` runs, in-process (`Stepline`, no HTTP), on a fresh SQLite file (sync
normal, as `stepline start`) and on the machine's Redis (127.0.0.1:6379, a key prefix of its own). A
benchmark, not a test: it prints figures and fails on nothing but errors.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stepline import Stepline

console = Console()

PROJECT = {
    "steps/steps_step.py": """
    import time
    config = {"type": "event", "name": "Steps", "subscribes": ["steps"],
              "infrastructure": {"handler": {"timeout": 300}}}

    async def same(i):
        return i

    def same_sync(i):
        return i

    async def handler(input, ctx):
        fn = same_sync if input.get("sync") else same
        started = time.perf_counter()
        for i in range(input["n"]):
            if input["durable"]:
                await ctx.step(f"s-{i}", fn, i)
            elif input.get("sync"):
                same_sync(i)
            else:
                await same(i)
        took = time.perf_counter() - started
        if input.get("replay") and await ctx.state.increment("replayed", ctx.run_id) == 1:
            await ctx.state.set("took", input["key"], took)
            raise RuntimeError("once more, to replay")  # the retry finds every step in the journal
        await ctx.state.set("took", input["key"] + (":replayed" if input.get("replay") else ""), took)
""",
    "steps/wait_step.py": """
    import time
    config = {"type": "event", "name": "Waiter", "subscribes": ["wait"], "waitsFor": ["reply"],
              "infrastructure": {"queue": {"backoff": {"initial": 0.001, "jitter": 0}}}}
    async def handler(input, ctx):
        started = time.time()
        if await ctx.state.get("suspended", input["id"]):
            await ctx.state.set("resumed", input["id"], started)
        await ctx.state.set("suspended", input["id"], True)
        await ctx.wait_for("reply", {"id": input["id"]})
""",
}


def make_project(root: Path) -> None:
    for rel, source in PROJECT.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())


def store_url(kind: str, root: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{root}/stepline.db"
    return f"redis://127.0.0.1:6379/0?prefix=bench-{uuid.uuid4().hex[:8]}&volatile=true"


async def _value(app: Stepline, group: str, key: str, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await app.engine.state.get(group, key)
        if value is not None:
            return float(value)
        await asyncio.sleep(0.001)
    raise TimeoutError(f"{group}/{key} never came")


async def one_run(kind: str, steps: int, waits: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root)
        app = Stepline(root, store=store_url(kind, root))
        await app.start()
        try:
            figures: dict[str, float] = {}
            for durable in (False, True):
                key = f"d{int(durable)}"
                await app.emit("steps", {"n": steps, "durable": durable, "key": key})
                figures[key] = await _value(app, "took", key)
            await app.emit("steps", {"n": steps, "durable": True, "key": "sync", "sync": True})
            figures["sync_ms"] = (await _value(app, "took", "sync") - figures["d0"]) / steps * 1000
            await app.emit("steps", {"n": steps, "durable": True, "key": "r", "replay": True})
            figures["record"] = await _value(app, "took", "r")
            figures["replay"] = await _value(app, "took", "r:replayed")
            figures["step_ms"] = (figures["d1"] - figures["d0"]) / steps * 1000
            figures["record_ms"] = (figures["record"] - figures["d0"]) / steps * 1000
            figures["replay_ms"] = (figures["replay"] - figures["d0"]) / steps * 1000
            latencies = []
            for i in range(waits):
                run = f"w{i}"
                await app.emit("wait", {"id": run})
                await _value(app, "suspended", run)
                await app.settle()  # suspended, its journal written
                sent = time.time()
                await app.emit("reply", {"id": run})
                latencies.append((await _value(app, "resumed", run) - sent) * 1000)
            latencies.sort()
            figures["wake_p50"] = statistics.median(latencies)
            figures["wake_p99"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            return figures
        finally:
            await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "redis"], choices=["sqlite", "redis"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    table = Table(title="Durable handlers (median of runs)", header_style="bold")
    columns = ("store", "memoized step", "with a sync fn", "replayed step", "event → resumed p50", "p99")
    for column in columns:
        table.add_column(column, justify="right")
    for kind in args.stores:
        results = [asyncio.run(one_run(kind, args.steps, args.waits)) for _ in range(args.runs)]

        def med(name: str, results: list[dict[str, float]] = results) -> float:
            return statistics.median(r[name] for r in results)

        table.add_row(
            kind,
            f"{med('step_ms'):.3f} ms",
            f"{med('sync_ms'):.3f} ms",
            f"{med('replay_ms'):.4f} ms",
            f"{med('wake_p50'):.2f} ms",
            f"{med('wake_p99'):.2f} ms",
        )
    console.print(table)
    console.print(
        f"[dim]{args.steps} steps per run; {args.waits} waits, one at a time; {args.runs} runs each. "
        "A step's cost is its run's time less the same calls made directly, per call.[/]"
    )


if __name__ == "__main__":
    main()
