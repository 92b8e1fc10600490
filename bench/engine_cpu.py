"""Benchmark: the engine's own cost per delivery, in one process on the memory store, no HTTP, no disk.

    python bench/engine_cpu.py [--chains 5000] [--runs 5] [--before PATH ...]

Emits `--chains` three-step chains (A -> B -> C: 3 deliveries, 2 emits and 2 state writes each) and
times until they settle, in CPU seconds of the process. Without the network and the disk in the way,
this is the figure to compare a change to the runtime's hot path by: `chain.py` and `api_ab.py` swing
by 10% run to run on a shared machine, this by a few. Each --before runs another checkout's `src/` (`git
worktree add /tmp/before <rev>`) in its own process, alternating with this one run by run. Prints the
runs and the medians; fails on nothing but errors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()

STEPS = {
    "a_step.py": """
config = {"type": "event", "name": "A", "subscribes": ["chain.a"], "emits": ["chain.b"]}
async def handler(input, ctx):
    await ctx.state.increment("runs", "A")
    await ctx.emit("chain.b", input)
""",
    "b_step.py": """
config = {"type": "event", "name": "B", "subscribes": ["chain.b"], "emits": ["chain.c"]}
async def handler(input, ctx):
    await ctx.emit("chain.c", input)
""",
    "c_step.py": """
config = {"type": "event", "name": "C", "subscribes": ["chain.c"]}
async def handler(input, ctx):
    await ctx.state.set("done", input["id"], True)
""",
}

# Run in a fresh interpreter per measurement; it speaks both the store URL and the older engine= argument.
RUN = """
import asyncio, json, sys, time, warnings
warnings.simplefilter("ignore")
from stepline import Stepline

async def main(root, chains):
    try:
        sl = Stepline(root, store="memory://")
    except TypeError:
        sl = Stepline(root, engine="memory")
    async with sl.lifespan():
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(chains):
            await sl.emit("chain.a", {"id": str(i)})
        await sl.settle(timeout=600)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert len(await sl.engine.state.get_group("done")) == chains
    print(json.dumps({"cpu_s": cpu, "wall_s": wall}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def one_run(root: Path, chains: int, src: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(root), str(chains)], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--before", type=Path, action="append", default=[], help="another Stepline checkout to measure beside this one"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stepline-engine-cpu-"))
    (root / "steps").mkdir()
    for name, source in STEPS.items():
        (root / "steps" / name).write_text(source.lstrip())
    systems: dict[str, Path | None] = {path.name: path.resolve() / "src" for path in args.before}
    systems["stepline"] = None
    console.print(
        f"[bold]Engine CPU per delivery[/] · {args.chains} chains (x3 deliveries) x {args.runs} runs, memory store"
    )
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    for n in range(args.runs):
        for name, src in systems.items():
            result = one_run(root, args.chains, src)
            runs[name].append(result)
            console.print(f"  {name}, run {n + 1}: {result['cpu_s']:.3f} s CPU", style="dim")
    table = Table(title="median (min - max)", header_style="bold")
    for column in ("", "CPU s", "µs per delivery", "deliveries/s (wall)"):
        table.add_column(column, justify="right")
    deliveries = 3 * args.chains
    for name, results in runs.items():
        cpu = [r["cpu_s"] for r in results]
        wall = [r["wall_s"] for r in results]
        table.add_row(
            name,
            f"{statistics.median(cpu):.3f} ({min(cpu):.3f} - {max(cpu):.3f})",
            f"{statistics.median(cpu) / deliveries * 1e6:.1f}",
            f"{deliveries / statistics.median(wall):,.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
