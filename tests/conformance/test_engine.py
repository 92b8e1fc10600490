"""Delivery semantics through the whole engine, on every engine: retries with backoff, timeouts, dead
letters and replay, delay, idempotency, FIFO under concurrency, per-step concurrency, atomic state."""

from __future__ import annotations

import asyncio
import itertools
import time

from stepline import Stepline
from stepline.core.scheduler import CronScheduler
from stepline.testing import FakeClock

from ..conftest import ProjectFactory


async def test_delay_and_idempotency_key(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/api_step.py": """
            config = {"type": "api", "name": "Pay", "path": "/pay/{id}", "method": "POST", "emits": ["charge"]}
            async def handler(req, ctx):
                pay = req.path_params["id"]
                await ctx.emit({"topic": "charge", "data": {"id": pay}, "idempotencyKey": pay, "delay": 0.3})
                return {"status": 202}
        """,
            "steps/charge_step.py": """
            import time
            config = {"type": "event", "name": "Charge", "subscribes": ["charge"]}
            async def handler(input, ctx):
                await ctx.state.increment("charges", input["id"])
                await ctx.state.set("at", input["id"], time.time())
        """,
        }
    )
    from stepline.testing import serve

    async with serve(root, store=store) as app:
        sent = time.time()
        for _ in range(3):  # a client retrying: one charge
            assert (await app.client.post("/pay/p1")).status_code == 202
        await app.client.post("/pay/p2")
        await app.settle()
        assert await app.state("charges", "p1") == 1
        assert await app.state("charges", "p2") == 1
        assert await app.state("at", "p1") - sent >= 0.3


async def test_fifo_order_within_groups_under_concurrency(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/ledger_step.py": """
            import asyncio, random
            config = {"type": "event", "name": "Ledger", "subscribes": ["entry"],
                      "infrastructure": {"queue": {"type": "fifo", "maxRetries": 5,
                                                   "backoff": {"initial": 0.01, "jitter": 0}}}}
            failed = set()
            async def handler(input, ctx):
                await asyncio.sleep(random.random() / 200)
                if input["n"] % 7 == 3 and (input["account"], input["n"]) not in failed:
                    failed.add((input["account"], input["n"]))
                    raise RuntimeError("flaky once")  # holds its group until the retry succeeds
                seen = await ctx.state.get("ledger", input["account"]) or []
                await ctx.state.set("ledger", input["account"], seen + [input["n"]])
        """
        }
    )
    sl = Stepline(root, store=store, concurrency=16)
    async with sl.lifespan():
        for n in range(30):
            for account in ("a", "b", "c"):
                await sl.emit("entry", {"account": account, "n": n}, message_group_id=account)
        await sl.settle()
        ledgers = await sl.engine.state.get_group("ledger")
    assert ledgers == {account: list(range(30)) for account in ("a", "b", "c")}


async def test_step_concurrency_limit(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/c_step.py": """
            import asyncio
            running = {"now": 0, "max": 0}
            config = {"type": "event", "name": "C", "subscribes": ["c"],
                      "infrastructure": {"handler": {"concurrency": 2}}}
            async def handler(input, ctx):
                running["now"] += 1
                running["max"] = max(running["max"], running["now"])
                await asyncio.sleep(0.02)
                running["now"] -= 1
                await ctx.state.set("max", "value", running["max"])
        """
        }
    )
    sl = Stepline(root, store=store)
    async with sl.lifespan():
        for i in range(10):
            await sl.emit("c", i)
        await sl.settle()
        assert await sl.engine.state.get("max", "value") == 2


async def test_atomic_state_from_handlers(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/count_step.py": """
            config = {"type": "event", "name": "Count", "subscribes": ["hit"]}
            async def handler(input, ctx):
                await ctx.state.increment("stats", "hits")
                await ctx.state.merge("stats", "seen", {str(input): True})
                if await ctx.state.compare_and_set("stats", "first", None, input):
                    await ctx.state.increment("stats", "winners")
        """,
            "steps/sync_step.py": """
            config = {"type": "event", "name": "SyncCount", "subscribes": ["hit"]}
            def handler(input, ctx):
                ctx.state.increment("stats", "sync_hits", 2)
        """,
        }
    )
    sl = Stepline(root, store=store)
    async with sl.lifespan():
        for i in range(50):
            await sl.emit("hit", i)
        await sl.settle()
        stats = await sl.engine.state.get_group("stats")
    assert stats["hits"] == 50 and stats["sync_hits"] == 100 and stats["winners"] == 1
    assert stats["seen"] == {str(i): True for i in range(50)}


async def test_a_missed_tick_runs_once_at_start_up(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/nightly_step.py": """
            config = {"type": "cron", "name": "Nightly", "cron": "0 2 * * *"}
            async def handler(ctx):
                await ctx.state.increment("runs", "nightly")
        """,
            "steps/hourly_step.py": """
            config = {"type": "cron", "name": "Hourly", "cron": "0 * * * *", "missed": "skip"}
            async def handler(ctx):
                await ctx.state.increment("runs", "hourly")
        """,
        }
    )
    sl = Stepline(root, store=store)
    lock = sl.adapters.cron
    three_days_ago = time.time() - 3 * 86400
    await lock.claim_tick("Nightly", three_days_ago)  # the last run anyone saw
    await lock.claim_tick("Hourly", three_days_ago)
    scheduler = CronScheduler(sl.engine, lock)
    await sl.engine.start()
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(5):
            while True:
                if await sl.engine.state.get("runs", "nightly") is not None:
                    break
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert await sl.engine.state.get_group("runs") == {"nightly": 1}  # three missed: run once; hourly skips
        assert await lock.last_tick("Nightly") > three_days_ago
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sl.engine.stop()
        await sl.adapters.close()


async def test_retries_with_backoff_then_dead_letter_and_replay(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/flaky_step.py": """
            import time
            config = {"type": "event", "name": "Flaky", "subscribes": ["job"],
                      "infrastructure": {"queue": {"maxRetries": 3,
                                                   "backoff": {"initial": 0.05, "multiplier": 2, "jitter": 0}}}}
            async def handler(input, ctx):
                await ctx.state.merge("attempts", input["id"], {str(time.time()): True})
                if await ctx.state.get("fixed", "flaky") is None:
                    raise ValueError("still broken")
        """
        }
    )
    sl = Stepline(root, store=store)
    async with sl.lifespan():
        event = await sl.emit("job", {"id": "j1"})
        await sl.settle()
        times = sorted(float(t) for t in await sl.engine.state.get("attempts", "j1"))
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 4  # the first attempt and three retries
        for gap, planned in zip(gaps, [0.05, 0.1, 0.2], strict=True):
            assert planned <= gap < planned + 0.25, (gaps, planned)
        [dead] = await sl.dead_letters()
        assert (dead.event.id, dead.attempts, dead.error) == (event.id, 4, "ValueError: still broken")
        await sl.engine.state.set("fixed", "flaky", True)
        assert await sl.replay() == 1
        await sl.settle()
        assert await sl.dead_letters() == []
        assert len(await sl.engine.state.get("attempts", "j1")) == 5


async def test_a_handler_past_its_timeout_is_cancelled_and_retried(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/slow_step.py": """
            import asyncio
            config = {"type": "event", "name": "Slow", "subscribes": ["slow"],
                      "infrastructure": {"handler": {"timeout": 0.2},
                                         "queue": {"maxRetries": 1, "backoff": {"initial": 0.01}}}}
            async def handler(input, ctx):
                n = await ctx.state.increment("runs", "slow")
                try:
                    await asyncio.sleep(5 if n == 1 else 0)
                except asyncio.CancelledError:
                    await ctx.state.set("cancelled", "slow", n)
                    raise
        """
        }
    )
    sl = Stepline(root, store=store)
    async with sl.lifespan():
        started = time.monotonic()
        await sl.emit("slow", {})
        await sl.settle()
        assert time.monotonic() - started < 3
        assert await sl.engine.state.get("runs", "slow") == 2
        assert await sl.engine.state.get("cancelled", "slow") == 1
        assert await sl.dead_letters() == []


async def test_a_sync_handler_past_its_timeout_is_abandoned_and_counted_failed(
    make_project: ProjectFactory, store: str
) -> None:
    root = make_project(
        {
            "steps/stuck_step.py": """
            import time
            config = {"type": "event", "name": "Stuck", "subscribes": ["stuck"],
                      "infrastructure": {"handler": {"timeout": 0.2}, "queue": {"maxRetries": 0}}}
            def handler(input, ctx):
                time.sleep(1.5)  # a thread cannot be cancelled: it is left to finish on its own
                ctx.state.set("late", "stuck", True)
        """
        }
    )
    sl = Stepline(root, store=store)
    async with sl.lifespan():
        started = time.monotonic()
        await sl.emit("stuck", {})
        await sl.settle()
        assert time.monotonic() - started < 1.5
        [dead] = await sl.dead_letters()
        assert dead.error == "timed out after 0.2s" and dead.attempts == 1


async def test_the_idempotency_window_is_configurable(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/once_step.py": """
            config = {"type": "event", "name": "Once", "subscribes": ["once"]}
            async def handler(input, ctx):
                await ctx.state.increment("runs", "once")
        """
        }
    )
    clock = FakeClock()
    sl = Stepline(root, store=store, idempotency_window=3600, clock=clock)
    async with sl.lifespan():
        await sl.emit("once", {}, idempotency_key="k")
        clock.advance(3599)
        await sl.emit("once", {}, idempotency_key="k")  # within the window: a repeat
        clock.advance(2)
        await sl.emit("once", {}, idempotency_key="k")  # the window has passed: accepted again
        await sl.settle()
        assert await sl.engine.state.get("runs", "once") == 2
