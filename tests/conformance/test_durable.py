"""Durable handlers on every store: ctx.step memoized across retries, ctx.sleep and ctx.wait_for suspended
on a fake clock, emits made once per run, cancellation, the code-change rule, limits and usage errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stepline import Stepline
from stepline.core.durable import cancel_run, runs
from stepline.testing import FakeClock, serve

from ..conftest import ProjectFactory

FAST_RETRY = '"infrastructure": {"queue": {"backoff": {"initial": 0.01, "jitter": 0}}}'


async def _until(check: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]  # noqa: ASYNC110 - polling the store
            await asyncio.sleep(0.01)


async def test_steps_run_once_per_run_across_a_failure(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/a_step.py": f"""
            from pydantic import BaseModel

            class Quote(BaseModel):
                price: int

            config = {{"type": "event", "name": "A", "subscribes": ["go"], "emits": ["done"], {FAST_RETRY}}}

            async def handler(input, ctx):
                async def quote():
                    await ctx.state.increment("ran", "quote")
                    return Quote(price=5)
                def double(x):  # a plain function runs on a thread
                    return x * 2
                q = await ctx.step("quote", quote)
                assert isinstance(q, Quote)
                doubled = await ctx.step("double", double, q.price)
                await ctx.emit("done", {{"n": doubled}})
                try:
                    await ctx.step("flaky", flaky)
                except ValueError as exc:  # caught: its failure is recorded, and raised again on replay
                    n = await ctx.state.increment("ran", "caught")
                    await ctx.state.set("caught", str(n), str(exc))
                if await ctx.state.increment("ran", "handler") < 3:
                    raise RuntimeError("fails after the steps")
                await ctx.state.set("result", "a", doubled)

            async def flaky():
                raise ValueError("card declined")
        """,
            "steps/d_step.py": """
            config = {"type": "event", "name": "D", "subscribes": ["done"]}
            async def handler(input, ctx):
                await ctx.state.increment("ran", "done")
        """,
        }
    )
    async with serve(root, store=store) as app:
        await app.emit("go", {})
        await app.settle()
        assert await app.state("result", "a") == 10
        assert await app.state("ran", "handler") == 3
        assert await app.state("ran", "quote") == 1  # not run again by either retry
        assert await app.state("ran", "done") == 1  # the emit was not made again
        assert await app.state("ran", "caught") == 3  # the recorded failure was raised again each time
        assert await runs(app.stepline.engine.control) == []  # the finished run's journal is gone


async def test_a_name_used_twice_fails_with_the_fix(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"],
                      "infrastructure": {"queue": {"maxRetries": 0}}}
            async def handler(input, ctx):
                for i in range(2):
                    await ctx.step("fetch", lambda: i)
        """
        }
    )
    async with serve(root, store=store) as app:
        await app.emit("go", {})
        await app.settle()
        [dead] = await app.stepline.engine.queue.dead_letters()
        assert "StepNameError" in dead.error and "used twice" in dead.error and 'f"fetch-{i}"' in dead.error


async def test_sleep_suspends_frees_the_slot_and_resumes(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"], "emits": ["woke"]}
            async def handler(input, ctx):
                await ctx.step("before", ctx.state.increment, "ran", "before")
                await ctx.emit("woke", {"at": "before"})
                await ctx.sleep(3600)
                await ctx.state.set("result", input["id"], "slept")
        """,
            "steps/w_step.py": """
            config = {"type": "event", "name": "W", "subscribes": ["woke"]}
            async def handler(input, ctx):
                await ctx.state.increment("ran", "woke")
        """,
        }
    )
    clock = FakeClock()
    async with serve(root, store=store, clock=clock, concurrency=1) as app:
        engine = app.stepline.engine
        for i in range(3):  # one worker slot, three sleeping runs: none holds it
            await app.emit("go", {"id": str(i)})
        await app.settle()
        listed = await runs(engine.control)
        assert len(listed) == 3 and {r["status"] for r in listed} == {"suspended"}
        assert listed[0]["waiting"]["kind"] == "sleep"
        stats = await engine.queue.stats(horizon=60)
        assert (stats.in_flight, stats.ready, stats.later) == (0, 0, 3)
        assert await engine.queue.backlog("A") == 0  # suspended runs are not a backlog
        clock.advance(3601)
        await app.settle()
        assert [await app.state("result", str(i)) for i in range(3)] == ["slept"] * 3
        assert await app.state("ran", "before") == 3 and await app.state("ran", "woke") == 3


async def test_wait_for_matching_early_non_matching_and_timeout(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/api_step.py": """
            config = {"type": "api", "name": "Pay", "path": "/pay", "method": "POST", "emits": ["paid"]}
            async def handler(req, ctx):
                await ctx.emit("paid", req.body)
                return {"status": 202}
        """,
            "steps/order_step.py": """
            from stepline import WaitTimeoutError
            config = {"type": "event", "name": "Order", "subscribes": ["order"], "emits": ["charge"],
                      "waitsFor": ["paid"]}
            async def handler(input, ctx):
                if input.get("early"):
                    await ctx.emit("charge", {"order": input["order"]})  # the reply may beat the wait line
                try:
                    paid = await ctx.wait_for("paid", {"order": input["order"]}, timeout=6 * 3600)
                except WaitTimeoutError:
                    paid = "timed out"
                await ctx.state.set("result", input["order"], paid)
        """,
            "steps/charge_step.py": """
            config = {"type": "event", "name": "Charge", "subscribes": ["charge"], "emits": ["paid"]}
            async def handler(input, ctx):
                await ctx.emit("paid", {"order": input["order"], "via": "charge"})
        """,
        }
    )
    clock = FakeClock()
    async with serve(root, store=store, clock=clock) as app:
        engine = app.stepline.engine
        await app.emit("paid", {"order": "late"})  # published before the run began: never seen by it
        clock.advance(1)
        await app.emit("order", {"order": "late"})
        await app.emit("order", {"order": "early", "early": True})
        await app.emit("order", {"order": "never"})
        await app.settle()
        assert await app.state("result", "early") == {"order": "early", "via": "charge"}
        assert await app.state("result", "late") is None
        clock.advance(3 * 3600)  # hours later
        await app.client.post("/pay", json={"order": "other"})  # matches nothing
        await app.settle()
        assert await app.state("result", "late") is None
        await app.client.post("/pay", json={"order": "late", "amount": 7})
        await _until(lambda: app.state("result", "late"))
        assert await app.state("result", "late") == {"order": "late", "amount": 7}
        clock.advance(3 * 3600 + 1)  # past the 6-hour timeout of "never"
        await app.settle()
        assert await app.state("result", "never") == "timed out"
        assert await runs(engine.control) == []


async def test_each_event_satisfies_one_wait_of_a_run(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/order_step.py": """
            config = {"type": "event", "name": "Two", "subscribes": ["go"], "waitsFor": ["tick"]}
            async def handler(input, ctx):
                first = await ctx.wait_for("tick")
                second = await ctx.wait_for("tick")
                await ctx.state.set("result", "two", [first["n"], second["n"]])
        """
        }
    )
    async with serve(root, store=store) as app:
        await app.emit("go", {})
        await app.settle()
        await app.emit("tick", {"n": 1})
        await app.settle()
        assert await app.state("result", "two") is None  # one event, one wait
        await app.emit("tick", {"n": 2})
        await app.settle()
        assert await app.state("result", "two") == [1, 2]


async def test_cancel_a_suspended_and_a_running_run(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            import asyncio
            config = {"type": "event", "name": "A", "subscribes": ["go"]}
            async def handler(input, ctx):
                await ctx.state.set("run", input["how"], ctx.run_id)
                if input["how"] == "sleeping":
                    await ctx.sleep(86400)
                else:
                    await ctx.step("mark", lambda: 1)
                    await asyncio.sleep(60)
                await ctx.state.set("finished", input["how"], True)
        """
        }
    )
    async with serve(root, store=store) as app:
        engine = app.stepline.engine
        sleeping = await app.emit("go", {"how": "sleeping"})
        running = await app.emit("go", {"how": "running"})
        await _until(lambda: app.state("run", "running"))
        await _until(lambda: app.state("run", "sleeping"))
        await _until(lambda: _status(engine, "sleeping"))
        for how in ("sleeping", "running"):
            assert await cancel_run(
                engine.control, engine.queue, await app.state("run", how), "not needed", engine.clock
            )
        await app.settle(timeout=10)
        for how, trace_id in (("sleeping", sleeping), ("running", running)):
            assert await app.state("finished", how) is None
            ends = [r for r in await app.trace(trace_id) if r.kind == "end"]
            assert ends[-1].data["status"] == "cancelled" and "not needed" in ends[-1].data["error"]
        assert await runs(engine.control) == []
        assert not await cancel_run(engine.control, engine.queue, "no-such-run", "", engine.clock)


async def _status(engine: object, how: str) -> bool:
    listed = await runs(engine.control)  # type: ignore[attr-defined]
    return any(r["status"] == "suspended" for r in listed)


CODE = """
config = {{"type": "event", "name": "A", "subscribes": ["go"],
          "infrastructure": {{"durable": {{"onCodeChange": "{rule}"}}}}}}
async def handler(input, ctx):
    await ctx.step("first", ctx.state.increment, "ran", "first")
    await ctx.sleep(60)
    await ctx.state.set("result", "a", "{version}")
"""


@pytest.mark.parametrize("rule", ["continue", "dead_letter"])
async def test_code_changed_while_suspended(
    make_project: ProjectFactory, shared_store: str, rule: str, tmp_path: Path
) -> None:
    root = make_project({"steps/a_step.py": CODE.format(rule=rule, version="v1")})
    clock = FakeClock()
    app = Stepline(root, store=shared_store, clock=clock)
    await app.start()
    try:
        trace_id = (await app.emit("go", {})).trace_id
        await app.settle()
    finally:
        await app.stop()
    (root / "steps/a_step.py").write_text(CODE.format(rule=rule, version="v2"))
    clock.advance(61)
    app = Stepline(root, store=shared_store, clock=clock)
    await app.start()
    try:
        await app.settle()
        state = app.engine.state
        assert await state.get("ran", "first") == 1
        if rule == "continue":
            assert await state.get("result", "a") == "v2"
            trace = await app.engine.traces.trace(trace_id)
            assert any(r.kind == "run" and r.data["op"] == "code_changed" for r in trace)
        else:
            assert await state.get("result", "a") is None
            [dead] = await app.engine.queue.dead_letters()
            assert "code of step A changed" in dead.error and "onCodeChange: dead_letter" in dead.error
            assert await app.engine.queue.replay(dead.delivery_id)  # from the top, on the new code
            await app.settle()
            assert await state.get("ran", "first") == 2
    finally:
        await app.stop()


async def test_usage_errors_say_the_fix(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/api_step.py": """
            config = {"type": "api", "name": "Nap", "path": "/nap", "method": "POST"}
            async def handler(req, ctx):
                assert await ctx.step("plain", lambda: 2) == 2  # no run: it just runs
                await ctx.sleep(1)
        """,
            "steps/a_step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"], "emits": ["noted"],
                      "infrastructure": {"queue": {"maxRetries": 0},
                      "durable": {"maxResultBytes": 1000, "maxEntries": 5}}}
            async def handler(input, ctx):
                if input == "emits":  # noted in memory, then too many to write when the run sleeps
                    for i in range(10):
                        await ctx.emit("noted", i)
                    await ctx.sleep(10)
                if input == "undeclared":
                    await ctx.wait_for("paid")
                if input == "big":
                    await ctx.step("big", lambda: "x" * 2000)
                if input == "many":
                    for i in range(10):
                        await ctx.step(f"s-{i}", lambda: i)
                if input == "swallow":
                    try:
                        await ctx.sleep(10)
                    except BaseException:
                        return
                if input == "exception":
                    try:
                        await ctx.sleep(10)
                    except Exception:
                        raise AssertionError("except Exception caught the suspension")
        """,
        }
    )
    async with serve(root, store=store) as app:
        response = await app.client.post("/nap")
        assert response.status_code == 500
        trace = await app.trace(response.headers["x-trace-id"])
        assert any("an API step cannot suspend" in str(r.data.get("error")) for r in trace)
        for case in ("undeclared", "big", "many", "swallow", "exception", "emits"):
            await app.emit("go", case)
        await app.settle()
        errors = {d.event.data: d.error for d in await app.stepline.engine.queue.dead_letters()}
        assert '"waitsFor": ["paid"]' in errors["undeclared"]
        assert "maxResultBytes" in errors["big"] and "2,002 bytes" in errors["big"]
        assert "more than 5 journal entries" in errors["many"]
        assert "more than 5 journal entries" in errors["emits"]
        assert "caught the suspension" in errors["swallow"]
        assert "exception" not in errors  # it suspended: except Exception did not catch it


async def test_a_sync_handler_steps_and_sleeps_too(make_project: ProjectFactory, store: str) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"]}
            def handler(input, ctx):  # on a thread, with a blocking ctx
                n = ctx.step("count", lambda: ctx.state.increment("ran", "count"))
                ctx.sleep(600)
                ctx.state.set("result", "a", {"n": n, "run": ctx.run_id is not None})
        """
        }
    )
    clock = FakeClock()
    async with serve(root, store=store, clock=clock) as app:
        await app.emit("go", {})
        await app.settle()
        [waiting] = await runs(app.stepline.engine.control)
        assert waiting["waiting"]["kind"] == "sleep"
        clock.advance(601)
        await app.settle()
        assert await app.state("result", "a") == {"n": 1, "run": True}
        assert await app.state("ran", "count") == 1
