"""Benchmark: Stepline's streams against Motia's stream server, 1,000 WebSocket subscribers on one server process.

    python bench/streams.py [--runs 3] [--subscribers 1000] [--burst 300] [--rate 10] [--seconds 5]
                            [--systems stepline,motia] [--no-deflate] [--json out.json]

Each run starts one server: Stepline (`stepline start`, one process, on a fresh SQLite file), or Motia 0.17
with its default engine on the machine's Redis, installed and started as bench/peers/motia_driver.py does.
One Node.js process (bench/streams_client.mjs, on the `ws` package installed under .bench/streams-client)
opens the subscribers' WebSocket connections, joins one group of one stream on each and waits for every
sync. Then an API step, one handler call per phase, sets the items the subscribers receive:

1. latency: `--rate` sets a second for `--seconds` s. Each item carries the wall-clock time just before its
   set; each subscriber notes when it received it. Figures: p50 and p99 of set to receipt, over every
   message of every subscriber.
2. throughput: `--burst` sets as fast as the handler can make them. Figure: the messages the subscribers
   received, divided by the time from the first set to the last receipt.

Every set has an id of its own, so every message is a create that has to be delivered (Stepline coalesces
waiting updates of one item for a subscriber that is behind, creates it cannot). One handler call makes all
the sets of a phase on both systems: Motia 0.17 runs each step call in a process of its own, and this
measures the stream server, not process spawning. The subscribers offer permessage-deflate, as browsers and
Motia's own client do (both servers decline it); with --no-deflate they do not. The systems
alternate run by run; each figure is the median of the runs. A benchmark, not a test: it fails on nothing
but errors.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from _common import free_port, http_ok, spawn, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "bench" / "streams_client.mjs"
CLIENT_DIR = ROOT / ".bench" / "streams-client"  # git-ignored, like Motia's install
WS_VERSION = "8.18.3"
STEPLINE = str(Path(sys.executable).parent / "stepline")
IDLE = 5.0  # a phase ends this many seconds after its last message, if not every message came
SYSTEMS = ("stepline", "motia")
LABELS = {"stepline": "Stepline", "motia": "Motia"}

console = Console()

# The step that makes the sets, the same on both systems. It is requested before the subscribers connect
# (see `arm`): it touches `armed` once it runs, waits for the file `go`, then sets `n` items, each due at
# start + i / rate (open loop: a set that falls behind is followed at once by the next one due; rate 0: as
# fast as it can). Each item is {"t": the wall clock in ms just before its set}.
STEPLINE_FILES = {
    "steps/bench_stream.py": """
config = {"name": "bench", "schema": {"type": "object"}}
""",
    "steps/burst_step.py": """
import asyncio
import time
from pathlib import Path

config = {"type": "api", "name": "Burst", "path": "/burst", "method": "POST"}


async def handler(req, ctx):
    body = req.body
    n, rate, prefix = int(body["n"]), float(body.get("rate") or 0), body.get("prefix", "m")
    if body.get("armed"):
        Path(body["armed"]).touch()
    while body.get("go") and not Path(body["go"]).exists():
        await asyncio.sleep(0.005)
    stream = ctx.streams.bench
    start = time.perf_counter()
    for i in range(n):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await stream.set("g", f"{prefix}{i}", {"t": time.time() * 1000})
    return {"status": 200, "body": {"sets": n, "seconds": time.perf_counter() - start}}
""",
}

MOTIA_FILES = {
    "steps/bench.stream.js": """
exports.config = { name: 'bench', schema: { type: 'object' }, baseConfig: { storageType: 'default' } }
""",
    "steps/burst.step.js": """
const fs = require('fs')

exports.config = { type: 'api', name: 'Burst', path: '/burst', method: 'POST', emits: [] }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

exports.handler = async (req, { streams }) => {
  const { n, rate = 0, prefix = 'm', armed, go } = req.body
  if (armed) fs.writeFileSync(armed, '')
  while (go && !fs.existsSync(go)) await sleep(5)
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    if (rate > 0) {
      const delay = start + (i * 1000) / rate - performance.now()
      if (delay > 0) await sleep(delay)
    }
    // The wall clock at sub-millisecond resolution (Date.now() counts whole milliseconds), as the client reads it
    await streams.bench.set('g', `${prefix}${i}`, { t: performance.timeOrigin + performance.now() })
  }
  return { status: 200, body: { sets: n, seconds: (performance.now() - start) / 1000 } }
}
""",
}


def motia_driver() -> ModuleType:
    """bench/peers/motia_driver.py, for its install, port and start helpers. It imports httpx at the top (it
    runs in run.py's virtualenv for Motia, which has it); this one has httpx2, the same API, never called here."""
    sys.modules.setdefault("httpx", importlib.import_module("httpx2"))
    return importlib.import_module("motia_driver")


def install_client() -> None:
    """npm install ws once into .bench/streams-client, where streams_client.mjs loads it from."""
    if not (CLIENT_DIR / "node_modules" / "ws" / "package.json").exists():
        CLIENT_DIR.mkdir(parents=True, exist_ok=True)
        (CLIENT_DIR / "package.json").write_text('{"name": "streams-client", "private": true}')
        command = ["npm", "install", "--no-audit", "--no-fund", f"ws@{WS_VERSION}"]
        subprocess.run(command, cwd=CLIENT_DIR, check=True, capture_output=True)


def write_files(project: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(source.lstrip())


def post_json(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def http_status(url: str) -> str:
    """What a GET of `url` gets: its status code, or why it got none."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return type(exc).__name__


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of this one process so far. Motia's per-call step processes are left out:
    they only pass the sets on to the server process, which stores them and writes to the sockets."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    http: str  # base URL
    probe: str  # a GET that answers 200 once it is up
    ws: str  # where the subscribers connect
    cleanup: Callable[[], None] = lambda: None


def start_stepline(run_dir: Path) -> Server:
    project = run_dir / "project"
    write_files(project, STEPLINE_FILES)
    port = free_port()
    command = [STEPLINE, "start", "--dir", str(project), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--store", f"sqlite:///{run_dir / 'stepline.db'}", "--grace", "2"]
    proc = spawn(command, run_dir / "server.log")
    url = f"http://127.0.0.1:{port}"
    return Server(proc, url, f"{url}/__stepline/health", f"ws://127.0.0.1:{port}/")


def start_motia(run_dir: Path) -> Server:
    driver = motia_driver()
    modules: Path = driver.install()
    # Inside the install folder, as the driver has it: Node finds node_modules by walking up.
    project: Path = driver.CACHE / "run-streams"
    shutil.rmtree(project, ignore_errors=True)
    write_files(
        project, {"motia.config.ts": driver.CONFIG, "steps/ping.step.js": driver.JS_STEPS["steps/ping.step.js"]}
    )
    write_files(project, MOTIA_FILES)
    (project / "package.json").write_text('{"name": "bench-streams", "private": true}')
    engine = redis.Redis(db=driver.ENGINE_DB)  # Motia's queues, state and streams
    engine.flushdb()
    port: int = driver.motia_port()
    # Without the Workbench (as Motia's Docker images run): a development UI, not on the stream path, whose
    # first start builds a bundle for minutes on two cores.
    env = {**driver.QUIET, "MOTIA_DOCKER_DISABLE_WORKBENCH": "true"}
    proc = spawn(driver.start_command(modules, port), run_dir / "server.log", cwd=project, env=env)
    url = f"http://127.0.0.1:{port}"
    return Server(proc, url, f"{url}/ping", f"ws://127.0.0.1:{port}/", cleanup=lambda: bool(engine.flushdb()))


class Client:
    """bench/streams_client.mjs: the subscribers, in one Node.js process; one JSON object a line each way."""

    def __init__(self, url: str, subscribers: int, deflate: bool, log: Path) -> None:
        command = ["node", str(CLIENT), "--modules", str(CLIENT_DIR), "--url", url, "--subscribers", str(subscribers)]
        if not deflate:
            command.append("--no-deflate")
        self.log = log
        self._stderr = log.open("ab")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next line the client prints that has `key`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if message is None:
                raise RuntimeError(f"the client exited with {self.proc.wait()}; see {self.log}")
            if key in message:
                return message
        raise TimeoutError(f"no {key!r} from the client within {timeout:g} s; see {self.log}")

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send({"cmd": "quit"})
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def arm(server: Server, run_dir: Path, phase: str, body: dict[str, Any], pool: ThreadPoolExecutor) -> Future[Any]:
    """Request a burst, and wait until its handler runs (it then waits for its go file).

    Both bursts are requested before the subscribers connect, so that the request itself is outside the
    measured phases: its handler starts at once and waits for the go file. (It began as the way around
    a Stepline that answered every request with 503 while 1,000 WebSockets were open, uvicorn's cap
    counting them; fixed since, and the row "HTTP GET meanwhile" checks it.) Motia is driven the same way."""
    armed = run_dir / f"{phase}.armed"
    body = {**body, "prefix": phase[0], "armed": str(armed), "go": str(run_dir / f"{phase}.go")}
    future = pool.submit(post_json, f"{server.http}/burst", body, 900)
    wait_for(lambda: armed.exists() or future.done(), 60, f"the {phase} burst's handler")
    if future.done():
        future.result()  # it failed: raise its error
    return future


def one_run(system: str, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    run_dir.mkdir(parents=True)
    server = start_stepline(run_dir) if system == "stepline" else start_motia(run_dir)
    client: Client | None = None
    bursts = {
        "latency": {"n": max(1, round(args.rate * args.seconds)), "rate": args.rate},
        "throughput": {"n": args.burst, "rate": 0},
    }
    pool = ThreadPoolExecutor(len(bursts))
    try:
        wait_for(lambda: http_ok(server.probe), 120, f"{system} to start")
        futures = {phase: arm(server, run_dir, phase, body, pool) for phase, body in bursts.items()}
        client = Client(server.ws, args.subscribers, not args.no_deflate, run_dir / "client.log")
        ready = client.expect("ready", 180)
        result: dict[str, Any] = {
            "connect_s": ready["connect_s"],
            "extensions": ready["extensions"] or "none",
            "http_with_subscribers": http_status(server.probe),
        }
        for phase, body in bursts.items():
            client.send({"cmd": "arm", "phase": phase, "sets": body["n"], "timeout": args.timeout, "idle": IDLE})
            client.expect("armed", 10)
            cpu, started = process_cpu(server.proc.pid), time.monotonic()
            (run_dir / f"{phase}.go").touch()
            figures = client.expect("phase", args.timeout + 30)
            server_cpu = (process_cpu(server.proc.pid) - cpu) / (time.monotonic() - started)
            burst = futures[phase].result(timeout=args.timeout)
            result[phase] = {
                **figures,
                "sets_per_s": body["n"] / burst["seconds"] if burst["seconds"] else None,
                "server_cpu": server_cpu,
                "client_cpu": figures["client_cpu_s"] / figures["wall_s"],
            }
            time.sleep(1.0)  # let the server settle between the phases
        return result
    finally:
        if client is not None:
            client.close()
        pool.shutdown(wait=False, cancel_futures=True)
        stop(server.proc)
        server.cleanup()


def flatten(run: dict[str, Any]) -> dict[str, float]:
    """The figures of one run that the table shows."""
    lat, thr = run["latency"], run["throughput"]
    return {
        "msgs_per_s": thr["msgs_per_s"] or 0.0,
        "sets_per_s": thr["sets_per_s"] or 0.0,
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "max_ms": lat["max_ms"],
        "burst_p99_ms": thr["p99_ms"],
        "frames_per_create": (thr["received"] + thr["extra"]) / thr["received"] if thr["received"] else 0.0,
        "lost": (lat["expect"] - lat["received"]) + (thr["expect"] - thr["received"]),
        "closed": thr["closed"],
        "client_cpu": 100 * thr["client_cpu"],
        "server_cpu": 100 * thr["server_cpu"],
        "connect_s": run["connect_s"],
    }


# key, label ({rate}: --rate), format
METRICS = [
    ("msgs_per_s", "delivered msgs/s, burst", "{:,.0f}"),
    ("sets_per_s", "sets/s, burst", "{:,.0f}"),
    ("p50_ms", "p50 ms, {rate:g} sets/s", "{:.2f}"),
    ("p99_ms", "p99 ms, {rate:g} sets/s", "{:.2f}"),
    ("max_ms", "max ms, {rate:g} sets/s", "{:.1f}"),
    ("burst_p99_ms", "p99 ms, burst", "{:,.0f}"),
    ("frames_per_create", "frames per create", "{:.2f}"),
    ("lost", "messages lost", "{:,.0f}"),
    ("closed", "connections closed", "{:,.0f}"),
    ("server_cpu", "server CPU %, burst", "{:.0f}"),
    ("client_cpu", "client CPU %, burst", "{:.0f}"),
    ("connect_s", "connect + sync (s)", "{:.1f}"),
]


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return f"{cpu} · {os.cpu_count()} cores · Python {platform.python_version()} · Node.js {node}"


def verdicts(medians: dict[str, dict[str, float]]) -> list[str]:
    ours, theirs = medians["stepline"], medians["motia"]
    rate = "above" if ours["msgs_per_s"] > theirs["msgs_per_s"] else "not above"
    p99 = "below" if ours["p99_ms"] < theirs["p99_ms"] else "not below"
    ratio = ours["msgs_per_s"] / theirs["msgs_per_s"] if theirs["msgs_per_s"] else float("nan")
    return [
        f"msgs/s: Stepline {ours['msgs_per_s']:,.0f}, Motia {theirs['msgs_per_s']:,.0f}: "
        f"[bold]{rate}[/] Motia's (x{ratio:.2f})",
        f"p99: Stepline {ours['p99_ms']:.2f} ms, Motia {theirs['p99_ms']:.2f} ms: [bold]{p99}[/] Motia's",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=300, help="sets in the throughput phase")
    parser.add_argument("--rate", type=float, default=10, help="sets a second in the latency phase")
    parser.add_argument("--seconds", type=float, default=5, help="length of the latency phase")
    parser.add_argument("--timeout", type=float, default=180, help="longest a phase may take, in seconds")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: stepline,motia")
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="subscribers that do not offer permessage-deflate (browsers and Motia's own client do)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := set(systems) - set(SYSTEMS):
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")

    install_client()
    if "motia" in systems:
        motia_driver().install()
    motia_version = motia_driver().VERSION if "motia" in systems else None
    console.print(
        f"[bold]Streams: {args.subscribers:,} WebSocket subscribers, one server process[/] · {args.runs} runs · "
        f"latency at {args.rate:g} sets/s for {args.seconds:g} s, then a burst of {args.burst:,} sets"
    )
    console.print(
        f"[dim]{machine()} · ws {WS_VERSION}" + (f" · motia {motia_version}" if motia_version else "") + "[/]"
    )
    work = Path(tempfile.mkdtemp(prefix="stepline-streams-"))
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for n in range(args.runs):
        for system in systems:  # alternating, so that a change in the machine's speed lands on both
            run = one_run(system, args, work / f"{system}-{n + 1}")
            runs[system].append(run)
            flat = flatten(run)
            console.print(
                f"  {LABELS[system]}, run {n + 1}: {flat['msgs_per_s']:,.0f} msgs/s, p50 {flat['p50_ms']:.2f} ms, "
                f"p99 {flat['p99_ms']:.2f} ms, {flat['lost']:,.0f} lost, {flat['closed']:.0f} closed",
                style="dim",
            )

    medians = {s: {k: statistics.median(flatten(r)[k] for r in runs[s]) for k, *_ in METRICS} for s in systems}
    table = Table(title=f"median of {args.runs} run{'s' if args.runs > 1 else ''}", header_style="bold")
    table.add_column("")
    for system in systems:
        table.add_column(LABELS[system], justify="right")
    both = len(systems) == 2
    if both:
        table.add_column("Stepline / Motia", justify="right")
    for key, label, fmt in METRICS:
        row = [label.format(rate=args.rate), *(fmt.format(medians[s][key]) for s in systems)]
        if both:
            theirs = medians["motia"][key]
            row.append(f"{medians['stepline'][key] / theirs:.2f}" if theirs else "-")
        table.add_row(*row)
    for label, key in (("WebSocket extension", "extensions"), ("HTTP GET meanwhile", "http_with_subscribers")):
        table.add_row(label, *(", ".join(sorted({r[key] for r in runs[s]})) for s in systems), *([""] if both else []))
    console.print(table)
    if both:
        for line in verdicts(medians):
            console.print(line)
    console.print(f"[dim]logs: {work}[/]")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        payload = {"machine": machine(), "settings": settings, "medians": medians, "runs": runs}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
