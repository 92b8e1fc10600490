"""Durable handlers in real processes on every store several processes can share (SQLite, Redis): a worker
SIGKILLed between two ctx.step calls, a sleep across a restart of every process, and 10,000 suspended runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2 as httpx

from stepline import Stepline
from stepline.core.durable import runs
from stepline.testing import FakeClock

from ..conftest import ProjectFactory, free_port
from .helpers import healthy, kill_group, probe, start_server, wait_until

THREE_STEPS = {
    "steps/api_step.py": """
    config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["go"]}
    async def handler(req, ctx):
        await ctx.emit("go", req.body)
        return {"status": 202}
""",
    "steps/three_step.py": """
    import asyncio
    config = {"type": "event", "name": "Three", "subscribes": ["go"],
              "infrastructure": {"handler": {"timeout": 120}}}

    async def count(name):
        import os
        return {"pid": os.getpid()}

    async def handler(input, ctx):
        for name in ("one", "two"):
            async def work(name=name):
                await ctx.state.increment("ran", name)
                return name
            await ctx.step(name, work)
        if await ctx.state.get("reached", "two") is None:
            await ctx.state.set("reached", "two", True)
            await asyncio.sleep(60)  # the test kills the worker here, after the second step was recorded
        async def three():
            await ctx.state.increment("ran", "three")
        await ctx.step("three", three)
        await ctx.state.set("done", input["id"], True)
""",
}


def test_a_worker_killed_after_the_second_step_runs_each_step_once(
    make_project: ProjectFactory, tmp_path: Path, shared_store: str
) -> None:
    root = make_project(THREE_STEPS)
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(root, port, log, store=shared_store)
    try:
        wait_until(lambda: healthy(port), 30, "the server")
        assert httpx.post(f"http://127.0.0.1:{port}/start", json={"id": "r1"}).status_code == 202
        with probe(shared_store, root) as store:
            wait_until(lambda: store.get("reached", "two") is True, 30, "the second step")
            kill_group(server)  # SIGKILL, mid-run
            server = start_server(root, port, log, store=shared_store)
            wait_until(lambda: store.get("done", "r1") is True, 60, "the run to finish after the restart")
            assert {k: store.get("ran", k) for k in ("one", "two", "three")} == {"one": 1, "two": 1, "three": 1}
            assert store.run(runs_of) == []
    finally:
        kill_group(server)


async def runs_of(adapters: object) -> list[dict[str, object]]:
    return await runs(adapters.control)  # type: ignore[attr-defined]


SLEEPER = {
    "steps/api_step.py": THREE_STEPS["steps/api_step.py"],
    "steps/nap_step.py": """
    config = {"type": "event", "name": "Nap", "subscribes": ["go"]}
    async def handler(input, ctx):
        await ctx.step("before", ctx.state.increment, "ran", "before")
        await ctx.sleep(2)
        await ctx.state.set("woke", input["id"], True)
""",
}


def test_a_sleep_survives_a_restart_of_every_process(
    make_project: ProjectFactory, tmp_path: Path, shared_store: str
) -> None:
    root = make_project(SLEEPER)
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(root, port, log, "--workers", "2", store=shared_store)
    try:
        wait_until(lambda: healthy(port), 30, "the server")
        assert httpx.post(f"http://127.0.0.1:{port}/start", json={"id": "r1"}).status_code == 202
        with probe(shared_store, root) as store:
            wait_until(lambda: any(r["status"] == "suspended" for r in store.run(runs_of)), 30, "the run to sleep")
            kill_group(server)  # every process, at once
            suspended = time.monotonic()
            time.sleep(2.5)
            server = start_server(root, port, log, "--workers", "2", store=shared_store)
            wait_until(lambda: store.get("woke", "r1") is True, 30, "the run to wake after the restart")
            assert time.monotonic() - suspended >= 2
            assert store.get("ran", "before") == 1
    finally:
        kill_group(server)


MANY = {
    "steps/nap_step.py": """
    config = {"type": "event", "name": "Nap", "subscribes": ["go"]}
    async def handler(input, ctx):
        await ctx.sleep(60)
        await ctx.state.increment("woke", "count")
        await ctx.state.set("woke", str(input["n"]), True)
""",
}
SUSPENDED = 10_000


async def test_ten_thousand_suspended_runs_hold_no_slot_and_all_resume(
    make_project: ProjectFactory, shared_store: str
) -> None:
    root = make_project(MANY)
    clock = FakeClock()
    app = Stepline(root, store=shared_store, clock=clock, concurrency=16)
    await app.start()
    try:
        started = time.monotonic()
        for first in range(0, SUSPENDED, 500):
            await asyncio.gather(*(app.emit("go", {"n": n}) for n in range(first, first + 500)))
        await app.settle(timeout=300)
        engine = app.engine
        listed = await runs(engine.control)
        assert len(listed) == SUSPENDED and all(r["status"] == "suspended" for r in listed)
        stats = await engine.queue.stats(horizon=30)
        assert (stats.in_flight, stats.ready, stats.later) == (0, 0, SUSPENDED)
        suspending = time.monotonic() - started
        clock.advance(61)
        await app.settle(timeout=300)
        woke = await engine.state.get_group("woke")
        assert woke["count"] == SUSPENDED and len(woke) == SUSPENDED + 1
        assert await runs(engine.control) == []
        resumed = time.monotonic() - started - suspending
        print(f"\n{SUSPENDED} runs suspended in {suspending:.1f} s, all resumed in {resumed:.1f} s")
    finally:
        await app.stop()


WAITERS = {
    "steps/wait_step.py": """
    config = {"type": "event", "name": "Wait", "subscribes": ["go"], "waitsFor": ["paid"]}
    async def handler(input, ctx):
        paid = await ctx.wait_for("paid", {"order": input["n"]})
        await ctx.state.set("paid", str(input["n"]), paid["amount"])
""",
}
WAITING = 2_000


async def test_thousands_of_waits_on_one_topic_each_resumed_by_its_own_event(
    make_project: ProjectFactory, shared_store: str
) -> None:
    # Each event finds its wait by the match's values (one group per shape), not by reading every wait: the
    # offers stay as quick with 2,000 waits on the topic as with one.
    root = make_project(WAITERS)
    app = Stepline(root, store=shared_store, concurrency=16)
    await app.start()
    try:
        for first in range(0, WAITING, 500):
            await asyncio.gather(*(app.emit("go", {"n": n}) for n in range(first, first + 500)))
        await app.settle(timeout=300)
        assert len(await runs(app.engine.control)) == WAITING
        started = time.monotonic()
        for first in range(0, WAITING, 500):
            await asyncio.gather(*(app.emit("paid", {"order": n, "amount": n * 10}) for n in range(first, first + 500)))
        await app.settle(timeout=300)
        paid = await app.engine.state.get_group("paid")
        assert paid == {str(n): n * 10 for n in range(WAITING)}
        assert await runs(app.engine.control) == []
        print(f"\n{WAITING} waits on one topic resumed by their events in {time.monotonic() - started:.1f} s")
    finally:
        await app.stop()
