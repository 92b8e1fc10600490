"""Motia from the npm registry with its default engine (BullMQ queues and state on Redis): JavaScript steps,
or with --python the same steps in Python.

Version: 0.17.6-beta.187, the newest release that runs offline here: the 1.0 release candidates need the
separate `iii` engine, which is not on a package registry. Its bundled Redis (redis-memory-server)
downloads Redis at install time, which this machine cannot, so Motia is pointed at the machine's Redis
(persistence off) instead: the same engine, a server it did not start itself. This release runs every step
invocation (API and event alike) in a Node.js process of its own, spawned for that call; a Python step
runs in a Python process of its own (Motia's python-runner.py), from the project's `python_modules`
virtualenv, which `motia install` would make and this driver makes itself (the same: a venv with
Motia's requirements-core.txt, plus redis for the step that records results).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
from _common import (
    HERE,
    Sampler,
    arguments,
    emit_result,
    http_ok,
    latency_ms,
    rss_mb,
    run_chains,
    spawn,
    stop,
    wait_for,
    wrk,
)

VERSION = "0.17.6-beta.187"
CACHE = HERE.parent.parent / ".bench" / "motia"
ENGINE_DB, RESULTS_DB = 12, 11
QUIET = {"MOTIA_ANALYTICS_DISABLED": "true"}  # offline here: no usage events sent per step run

CONFIG = f"""
import {{ config }} from '@motiadev/core'

export default config({{ redis: {{ useMemoryServer: false, host: '127.0.0.1', port: 6379, db: {ENGINE_DB} }} }})
"""

JS_STEPS = {
    "steps/ping.step.js": """
exports.config = { type: 'api', name: 'Ping', path: '/ping', method: 'GET', emits: [] }
exports.handler = async () => ({ status: 200, body: { ok: true } })
""",
    "steps/results.js": f"""
const {{ createClient }} = require('redis')
const client = createClient({{ database: {RESULTS_DB} }})
const ready = client.connect()
module.exports = async (key, field, value) => {{ await ready; await client.hSet(key, field, String(value)) }}
""",
    "steps/hop_api.step.js": """
exports.config = { type: 'api', name: 'HopApi', path: '/hop/:id', method: 'POST', emits: ['hop'] }
exports.handler = async (req, { emit }) => {
  await emit({ topic: 'hop', data: { id: req.pathParams.id, t: Date.now() / 1000 } })
  return { status: 202, body: {} }
}
""",
    "steps/hop.step.js": """
const record = require('./results')
exports.config = { type: 'event', name: 'Hop', subscribes: ['hop'], emits: [] }
exports.handler = async (input) => { await record('bench:hops', input.id, Date.now() / 1000 - input.t) }
""",
    "steps/chain_api.step.js": """
exports.config = { type: 'api', name: 'StartChain', path: '/chains/:id', method: 'POST', emits: ['chain.a'] }
exports.handler = async (req, { emit }) => {
  await emit({ topic: 'chain.a', data: { id: req.pathParams.id } })
  return { status: 202, body: {} }
}
""",
    "steps/a.step.js": """
exports.config = { type: 'event', name: 'A', subscribes: ['chain.a'], emits: ['chain.b'] }
exports.handler = async (input, { emit }) => { await emit({ topic: 'chain.b', data: input }) }
""",
    "steps/b.step.js": """
exports.config = { type: 'event', name: 'B', subscribes: ['chain.b'], emits: ['chain.c'] }
exports.handler = async (input, { emit }) => { await emit({ topic: 'chain.c', data: input }) }
""",
    "steps/c.step.js": """
const record = require('./results')
exports.config = { type: 'event', name: 'C', subscribes: ['chain.c'], emits: [] }
exports.handler = async (input) => { await record('bench:done', input.id, Date.now() / 1000) }
""",
}


PY_STEPS = {
    "steps/ping_step.py": """
config = {"type": "api", "name": "Ping", "path": "/ping", "method": "GET", "emits": []}

async def handler(req, context):
    return {"status": 200, "body": {"ok": True}}
""",
    "steps/hop_api_step.py": """
import time
config = {"type": "api", "name": "HopApi", "path": "/hop/:id", "method": "POST", "emits": ["hop"]}

async def handler(req, context):
    await context.emit({"topic": "hop", "data": {"id": req["pathParams"]["id"], "t": time.time()}})
    return {"status": 202, "body": {}}
""",
    "steps/hop_step.py": f"""
import time
import redis
config = {{"type": "event", "name": "Hop", "subscribes": ["hop"], "emits": []}}

async def handler(input, context):
    redis.Redis(db={RESULTS_DB}).hset("bench:hops", input["id"], str(time.time() - input["t"]))
""",
    "steps/chain_api_step.py": """
config = {"type": "api", "name": "StartChain", "path": "/chains/:id", "method": "POST", "emits": ["chain.a"]}

async def handler(req, context):
    await context.emit({"topic": "chain.a", "data": {"id": req["pathParams"]["id"]}})
    return {"status": 202, "body": {}}
""",
    "steps/a_step.py": """
config = {"type": "event", "name": "A", "subscribes": ["chain.a"], "emits": ["chain.b"]}

async def handler(input, context):
    await context.emit({"topic": "chain.b", "data": input})
""",
    "steps/b_step.py": """
config = {"type": "event", "name": "B", "subscribes": ["chain.b"], "emits": ["chain.c"]}

async def handler(input, context):
    await context.emit({"topic": "chain.c", "data": input})
""",
    "steps/c_step.py": f"""
import time
import redis
config = {{"type": "event", "name": "C", "subscribes": ["chain.c"], "emits": []}}

async def handler(input, context):
    redis.Redis(db={RESULTS_DB}).hset("bench:done", input["id"], str(time.time()))
""",
}


def install() -> Path:
    """npm install motia once into .bench/motia; projects link its node_modules."""
    modules = CACHE / "node_modules"
    if not (modules / ".bin" / "motia").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "package.json").write_text('{"name": "motia-bench", "private": true}')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"motia@{VERSION}"],
            cwd=CACHE,
            check=True,
            env={**os.environ, "REDISMS_DISABLE_POSTINSTALL": "1"},
            capture_output=True,
        )
    return modules


def motia_port() -> int:
    """A free port whose Workbench HMR port (21678 + port, fixed by Motia) is a valid, free port too:
    above 43857 the HMR server cannot listen and Motia's start hangs for ever."""
    while True:
        port = random.randrange(20000, 43000)
        if port_free(port) and port_free(port + 21678):
            return port


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_command(modules: Path, port: int) -> list[str]:
    return [str(modules / ".bin" / "motia"), "start", "-p", str(port), "-H", "127.0.0.1"]


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def python_modules(project: Path, modules: Path) -> None:
    """The virtualenv Motia runs Python steps from, as `motia install` makes it; kept between runs."""
    venv = project / "python_modules"
    if not (venv / ".installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        core = modules / "motia" / "dist" / "requirements-core.txt"
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(core), "redis"], check=True, capture_output=True)
        (venv / ".installed").touch()


def main() -> None:
    args = arguments(lambda parser: parser.add_argument("--python", action="store_true", help="Python steps"))
    modules = install()
    # Inside the install folder, so that Node finds its node_modules by walking up (a symlinked
    # node_modules leaves Motia's build step waiting for ever).
    project = CACHE / ("run-python" if args.python else "run")
    for old in project.glob("*") if project.exists() else []:
        if old.name != "python_modules":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for rel, source in {"motia.config.ts": CONFIG, **(PY_STEPS if args.python else JS_STEPS)}.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(source.lstrip())
    (project / "package.json").write_text('{"name": "bench", "private": true}')
    if args.python:
        python_modules(project, modules)
    engine, results = redis.Redis(db=ENGINE_DB), redis.Redis(db=RESULTS_DB)
    engine.flushdb()
    results.flushdb()
    warmed = CACHE / f".warmed-{project.name}"
    if not warmed.exists():
        # The first start after an install builds and caches the Workbench bundle (minutes on two cores);
        # that is installation, not start-up, so it happens once, untimed.
        port = motia_port()
        proc = spawn(start_command(modules, port), args.workdir / "warmup.log", cwd=project, env=QUIET)
        try:
            wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), 900, "Motia's first start")
        finally:
            stop(proc)
        warmed.touch()
    port = motia_port()
    url = f"http://127.0.0.1:{port}"
    launched = time.monotonic()
    proc = spawn(start_command(modules, port), args.workdir / "server.log", cwd=project, env=QUIET)
    try:
        wait_for(lambda: http_ok(f"{url}/ping"), 120, "the first request")
        startup = time.monotonic() - launched
        time.sleep(1.0)
        idle = rss_mb(proc.pid)
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(args.hops):
                client.post(f"/hop/{i}").raise_for_status()
                wait_for(lambda i=i: results.hlen("bench:hops") > i, 10, "a hop", interval=0.0005)
        hops = [float(v) for v in results.hvals("bench:hops")]
        api = wrk(f"{url}/ping", args.api_seconds)
        sampler = Sampler(proc.pid)
        chain = run_chains(
            httpx,
            url,
            args.chains,
            lambda: int(results.hlen("bench:done")),
            lambda: {k.decode(): float(v) for k, v in results.hgetall("bench:done").items()},
            sampler,
            timeout=300,
        )
    finally:
        stop(proc)
        engine.flushdb()
        results.flushdb()
    emit_result(
        {
            "api": api,
            "chain": chain,
            "hop": latency_ms(hops),
            "startup_s": startup,
            "rss_idle_mb": idle,
            "rss_loaded_mb": sampler.peak,
            "versions": f"motia {VERSION}, Node.js {node_version()}"
            + (f", Python {sys.version.split()[0]}" if args.python else ""),
        }
    )


if __name__ == "__main__":
    main()
