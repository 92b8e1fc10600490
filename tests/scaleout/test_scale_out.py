"""The same project on many processes sharing one Redis: separate API and worker processes, a worker
killed with SIGKILL mid-run, and the Redis server itself killed and restarted mid-run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from ..conftest import ProjectFactory, free_port
from ..durability.helpers import Probe, healthy, kill_group, probe, start_server, wait_until
from .server import redis_server

CHAINS = 10_000
GROUPS = 100  # FIFO groups: chain n belongs to group n % GROUPS, and is posted after chain n - GROUPS

PROJECT = {
    "steps/start_step.py": """
        config = {"type": "api", "name": "StartChain", "path": "/chains/{id}", "method": "POST", "emits": ["chain.a"]}
        async def handler(req, ctx):
            chain = int(req.path_params["id"])
            await ctx.emit({"topic": "chain.a", "data": {"id": chain}, "messageGroupId": f"g{chain % 100}",
                            "idempotencyKey": f"chain-{chain}"})
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/a_step.py": """
        # FIFO per group: one run of a group at a time, in the order of its emits, on whichever worker.
        config = {"type": "event", "name": "A", "subscribes": ["chain.a"], "emits": ["chain.b"],
                  "infrastructure": {"queue": {"type": "fifo"}}}
        async def handler(input, ctx):
            await ctx.state.increment("runs", "A")
            group = f"g{input['id'] % 100}"
            seen = await ctx.state.get("order", group) or []  # no other run of this group meanwhile
            await ctx.state.set("order", group, [*seen, input["id"]])
            await ctx.emit("chain.b", input)
    """,
    "steps/b_step.py": """
        config = {"type": "event", "name": "B", "subscribes": ["chain.b"], "emits": ["chain.c"]}
        async def handler(input, ctx):
            await ctx.state.increment("runs", "B")
            await ctx.emit("chain.c", input)
    """,
    "steps/c_step.py": """
        import os
        config = {"type": "event", "name": "C", "subscribes": ["chain.c"]}
        async def handler(input, ctx):
            await ctx.state.increment("runs", "C")
            await ctx.state.set("done", str(input["id"]), os.getpid())
    """,
    "steps/tick_step.py": """
        config = {"type": "cron", "name": "Tick", "cron": "* * * * * *"}
        async def handler(ctx):
            await ctx.state.increment("ticks", ctx.trace_id)  # a tick's trace: one per tick published
    """,
}


async def _post_groups(port: int, chains: int, groups: int, host: str = "127.0.0.1") -> tuple[set[int], int]:
    """POST every chain, one request at a time per group (so a group's emits have a known order), the groups
    side by side; a 503 or a lost connection is sent again. Returns the accepted chains and the refusals."""
    accepted: set[int] = set()
    refused = 0
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:

        async def group(g: int) -> None:
            nonlocal refused
            for chain in range(g, chains, groups):
                while True:
                    try:
                        response = await client.post(f"/chains/{chain}")
                    except httpx.TransportError:
                        response = None
                    if response is not None and response.status_code == 202:
                        accepted.add(chain)
                        break
                    if response is not None:
                        assert response.status_code == 503, response.text  # the store is away: never a 5xx else
                        assert response.headers["retry-after"]
                    refused += 1
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(group(g) for g in range(groups)))
    return accepted, refused


def _check_order(store: Probe, chains: int, groups: int) -> None:
    """Within each group, A ran the chains in the order they were posted (a run lost with its worker may
    repeat in place, never out of order)."""
    for g in range(groups):
        seen = store.get("order", f"g{g}")
        assert seen == sorted(seen), f"group g{g} ran out of order: {seen[:20]}"
        assert sorted(set(seen)) == list(range(g, chains, groups))


def _check_ticks(store: Probe) -> int:
    """Every tick was published once: no two tick traces are for the same tick. Returns the ticks."""
    ticks = store.group("ticks")

    async def tick_of(trace_id: str) -> float | None:
        records = await store.adapters.traces.trace(trace_id)
        return next((float(r.data["tick"]) for r in records if r.kind == "trigger"), None)

    found = [store.run(lambda a, t=t: tick_of(t)) for t in ticks]
    seconds = [s for s in found if s is not None]
    # A tick's trigger record is written by the process that published it, a moment later (trace records are
    # buffered; docs/production.md): the worker SIGKILLed mid-run can take the record of a tick it had just
    # published with it, while the tick itself, stored, runs elsewhere. Seen once in CI; one or two at most.
    assert len(found) - len(seconds) <= 2, f"{len(found) - len(seconds)} tick traces have no trigger record"
    assert len(seconds) == len(set(seconds)), "a cron tick fired twice"
    return len(found)


def _start(root: Path, port: int, log: Path, url: str, role: str) -> subprocess.Popen[bytes]:
    return start_server(root, port, log, "--role", role, store=url)


@pytest.mark.timeout(900)
async def test_three_workers_and_an_api_process_one_worker_killed(
    make_project: ProjectFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_store: str
) -> None:
    root = make_project(PROJECT)
    url = redis_store
    api_port, ports = free_port(), [free_port() for _ in range(3)]
    workers = [_start(root, p, tmp_path / f"worker{i}.log", url, "worker") for i, p in enumerate(ports)]
    api = _start(root, api_port, tmp_path / "api.log", url, "api")
    started = time.monotonic()
    with probe(url, root) as store:
        try:
            for port in [api_port, *ports]:
                await asyncio.to_thread(wait_until, lambda port=port: healthy(port), 30, "the processes")
            # A worker answers health checks, and no user route; the API process runs no step's handler.
            assert httpx.post(f"http://127.0.0.1:{ports[0]}/chains/1", timeout=5).status_code == 404
            assert httpx.get(f"http://127.0.0.1:{ports[0]}/__stepline/health", timeout=5).json()["role"] == "worker"
            assert httpx.get(f"http://127.0.0.1:{api_port}/__stepline/health", timeout=5).json()["role"] == "api"
            posting = asyncio.create_task(_post_groups(api_port, CHAINS, GROUPS))
            await asyncio.to_thread(wait_until, lambda: store.count("done") >= CHAINS // 3, 300, "a third done")
            kill_group(workers[0])  # SIGKILL, mid-run: its leases go to the others within seconds
            done_at_kill = store.count("done")
            accepted, _ = await posting
            assert accepted == set(range(CHAINS))  # (a request timed out under load is sent again)
            await asyncio.to_thread(wait_until, lambda: store.count("done") == CHAINS, 600, "every chain")
            took = time.monotonic() - started
            _check_order(store, CHAINS, GROUPS)
            ticks = _check_ticks(store)
            stats = store.stats()
            assert stats.pending + stats.later == 0 and stats.dead == 0
            pids = set(store.group("done").values())
            assert api.pid not in pids and len(pids) == 3  # the killed worker's share, and the two others'
            runs = {k: int(v) for k, v in store.group("runs").items()}
        finally:
            for proc in [*workers[1:], api]:
                kill_group(proc, signal.SIGTERM)
    repeated = sum(runs.values()) - 3 * CHAINS
    assert repeated >= 0
    with capsys.disabled():
        print(
            f"\n  scale-out: {CHAINS} chains on 3 workers + 1 API process (Redis) in {took:.0f} s; one worker "
            f"SIGKILLed at {done_at_kill} done; all completed, {GROUPS} FIFO groups in order, {ticks} cron ticks "
            f"each once; handler runs repeated: {repeated} (A {runs['A'] - CHAINS}, B {runs['B'] - CHAINS}, "
            f"C {runs['C'] - CHAINS})"
        )


@pytest.mark.timeout(600)
async def test_redis_killed_and_restarted_mid_run_loses_nothing_accepted(
    make_project: ProjectFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chains, groups = 2000, 20
    root = make_project(PROJECT | {"steps/start_step.py": PROJECT["steps/start_step.py"].replace("% 100", "% 20")})
    root.joinpath("steps/a_step.py").write_text(root.joinpath("steps/a_step.py").read_text().replace("% 100", "% 20"))
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    with redis_server(tmp_path / "redis", free_port(), *durable) as server:
        url = server.url()
        port = free_port()
        app = start_server(root, port, tmp_path / "server.log", "--workers", "2", store=url)
        with probe(url, root) as store:
            try:
                await asyncio.to_thread(wait_until, lambda: healthy(port), 30, "the server")
                posting = asyncio.create_task(_post_groups(port, chains, groups))
                await asyncio.to_thread(wait_until, lambda: store.count("done") >= chains // 4, 120, "a quarter")
                server.kill()  # SIGKILL the server mid-run; with appendfsync always, what it acknowledged is on disk
                await asyncio.sleep(1.0)
                outage = httpx.get(f"http://127.0.0.1:{port}/__stepline/health", timeout=10)
                assert outage.status_code == 503  # readiness says the store is away
                await asyncio.sleep(2.0)
                server.start()  # the same port, the same AOF: no one touches Stepline
                accepted, refused = await posting
                assert accepted == set(range(chains))
                await asyncio.to_thread(wait_until, lambda: store.count("done") == chains, 180, "every chain")
                await asyncio.to_thread(wait_until, lambda: healthy(port), 30, "readiness to recover")
                _check_order(store, chains, groups)
                # All chains are done, but the queue may still hold the deliveries of a repeated request (the
                # publish ran, its reply was lost with the server, the client sent it again), or ones whose
                # outcome waits out the store's absence: it drains by itself.
                left, drain_started = store.stats(), time.monotonic()
                await asyncio.to_thread(wait_until, lambda: store.queued() == 0, 90, "the queue to drain")
                drained = time.monotonic() - drain_started
                assert store.stats().dead == 0
            finally:
                kill_group(app, signal.SIGTERM)
    log = (tmp_path / "server.log").read_text()
    assert "cannot be reached" in log and "recovered" in log
    with capsys.disabled():
        print(
            f"\n  Redis restart: {chains} chains, Redis SIGKILLed and restarted mid-run; {refused} requests "
            "refused with 503 while it was away and sent again; all completed; still queued at the last chain's "
            f"end: {left.pending + left.later}, drained {drained:.1f} s later"
        )
