"""A store shared by several processes (each kind in tests/stores.py that can be): dead workers' leases,
drain, cron once. What the servers did is read through the store's Protocols, as `stepline state` reads it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from stepline.adapters import open_store
from stepline.adapters.base import ClaimSpec, Event, StoreOptions

from ..conftest import ProjectFactory, free_port
from .helpers import healthy, kill_group, probe, start_server, wait_until

# How long a silent worker is taken for alive: short here, so that a dead one's lease comes back quickly.
STALE_AFTER = 1.5


def _run_python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)


async def test_leases_of_a_killed_worker_go_back_to_the_queue(tmp_path: Path, shared_store: str) -> None:
    options = StoreOptions(root=tmp_path, stale_after=STALE_AFTER)
    script = f"""
        import asyncio, pathlib
        from stepline.adapters import open_store
        from stepline.adapters.base import ClaimSpec, StoreOptions

        async def main():
            options = StoreOptions(root=pathlib.Path({str(tmp_path)!r}), stale_after={STALE_AFTER})
            adapters = open_store({shared_store!r}, options)
            claimed = []
            while not claimed:
                claimed = await adapters.queue.claim({{"a": ClaimSpec(lease=3600)}}, 10)
                await asyncio.sleep(0.05)
            print(claimed[0].id, flush=True)
            await asyncio.sleep(3600)  # holds the lease for an hour... unless it dies

        asyncio.run(main())
    """
    adapters = open_store(shared_store, options)
    try:
        await adapters.queue.publish(Event("e1", "t", {"n": 1}, "tr", None, time.time()), {"a": 0.0})
        holder = _run_python(script)
        assert holder.stdout is not None
        leased_id = (await asyncio.to_thread(holder.stdout.readline)).strip()
        assert await adapters.queue.claim({"a": ClaimSpec(60)}, 10) == []  # it holds the lease
        holder.kill()
        holder.wait()
        holder.stdout.close()
        deadline = time.monotonic() + 10
        claimed = []
        while not claimed and time.monotonic() < deadline:
            claimed = await adapters.queue.claim({"a": ClaimSpec(60)}, 10)
            await asyncio.sleep(0.1)
        assert [d.id for d in claimed] == [leased_id]
        assert claimed[0].attempt == 2 and claimed[0].event.data == {"n": 1}
        assert claimed[0].lost  # the dead worker's attempt never finished: it counts, and the engine says so
    finally:
        await adapters.close()


SLOW = {
    "steps/slow_step.py": """
        import asyncio
        config = {"type": "event", "name": "Slow", "subscribes": ["slow"]}
        async def handler(input, ctx):
            await ctx.state.set("started", str(input["n"]), True)
            await asyncio.sleep(1.5)
            await ctx.state.set("finished", str(input["n"]), True)
    """,
    "steps/go_step.py": """
        config = {"type": "api", "name": "Go", "path": "/go/{n}", "method": "POST", "emits": ["slow"]}
        async def handler(req, ctx):
            await ctx.emit("slow", {"n": int(req.path_params["n"])})
            return {"status": 202}
    """,
}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_running_handlers_then_exits(
    make_project: ProjectFactory, tmp_path: Path, workers: str, shared_store: str
) -> None:
    root = make_project(SLOW)
    port = free_port()
    server = start_server(
        root, port, tmp_path / "server.log", "--workers", workers, "--grace", "10", store=shared_store
    )
    with probe(shared_store, root) as store:
        try:
            wait_until(lambda: healthy(port), 30, "the server")
            for n in range(4):
                assert httpx.post(f"http://127.0.0.1:{port}/go/{n}").status_code == 202
            wait_until(lambda: store.count("started") == 4, 10, "the handlers to start")
            server.send_signal(signal.SIGTERM) if workers == "1" else kill_group(server, signal.SIGTERM)
            assert server.wait(timeout=30) == 0, (tmp_path / "server.log").read_text()
        finally:
            if server.poll() is None:
                kill_group(server)
        assert store.count("finished") == 4
        assert store.queued() == 0


def test_a_cron_tick_fires_once_across_workers(make_project: ProjectFactory, tmp_path: Path, shared_store: str) -> None:
    root = make_project(
        {
            "steps/tick_step.py": """
            import time
            config = {"type": "cron", "name": "Tick", "cron": "* * * * * *"}
            async def handler(ctx):
                await ctx.state.increment("per_second", str(int(time.time())))
        """
        }
    )
    port = free_port()
    server = start_server(root, port, tmp_path / "server.log", "--workers", "2", store=shared_store)
    with probe(shared_store, root) as store:
        try:
            wait_until(lambda: healthy(port), 30, "the server")
            wait_until(lambda: store.count("per_second") >= 4, 15, "four ticks")
        finally:
            kill_group(server, signal.SIGTERM)
        counts = list(store.group("per_second").values())
    assert counts and all(c == 1 for c in counts), counts


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_served_process_freezes_what_it_loaded(make_project: ProjectFactory, tmp_path: Path, workers: str) -> None:
    """Start-up objects are taken out of the cyclic collector's sight (gc.freeze): a short p99 under load."""
    root = make_project(
        {
            "steps/gc_step.py": """
            import gc, os
            config = {"type": "api", "name": "Gc", "path": "/gc", "method": "GET"}
            async def handler(req, ctx):
                return {"status": 200, "body": {"frozen": gc.get_freeze_count(), "pid": os.getpid()}}
        """
        }
    )
    port = free_port()
    server = start_server(root, port, tmp_path / "server.log", "--workers", workers)
    try:
        wait_until(lambda: healthy(port), 30, "the server")
        answers = [httpx.get(f"http://127.0.0.1:{port}/gc").json() for _ in range(20)]
    finally:
        kill_group(server)
    assert all(a["frozen"] > 10_000 for a in answers), answers[:3]
