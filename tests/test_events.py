"""Event steps: fan-out, declared emits, trace ids across hops, input validation, retries, state."""

from __future__ import annotations

import asyncio

import pytest

from stepline import Stepline, UndeclaredEmitError
from stepline.testing import serve

from .conftest import ProjectFactory

CHAIN = {
    "steps/start_step.py": """
        config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["a"]}
        async def handler(req, ctx):
            ctx.logger.info("starting", {"n": req.body["n"]})
            await ctx.emit({"topic": "a", "data": req.body})
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/hop_b_step.py": """
        config = {"type": "event", "name": "HopB", "subscribes": ["a"], "emits": ["b"]}
        async def handler(input, ctx):
            await ctx.state.set(ctx.trace_id, "b", ctx.trace_id)
            await ctx.emit("b", {"n": input["n"] + 1})
    """,
    "steps/hop_c_step.py": """
        config = {"type": "event", "name": "HopC", "subscribes": ["b"], "emits": ["c"]}
        def handler(input, ctx):  # sync: runs on a thread, with a blocking ctx
            ctx.state.set(ctx.trace_id, "c", ctx.trace_id)
            ctx.emit({"topic": "c", "data": {"n": input["n"] + 1}})
    """,
    "steps/fan/audit_step.py": """
        config = {"type": "event", "name": "Audit", "subscribes": ["c"]}
        async def handler(input, ctx):
            ctx.logger.info("audited", input)
            await ctx.state.set(ctx.trace_id, "audit", input["n"])
    """,
    "steps/fan/notify_step.py": """
        config = {"type": "event", "name": "Notify", "subscribes": ["c"], "flows": ["notify"]}
        async def handler(input, ctx):
            await ctx.state.set(ctx.trace_id, "notify", {"n": input["n"], "flows": ctx.flows})
    """,
}


async def test_trace_id_follows_three_hops_and_fans_out(make_project: ProjectFactory) -> None:
    async with serve(make_project(CHAIN)) as app:
        r = await app.client.post("/start", json={"n": 1})
        assert r.status_code == 202
        trace_id = r.json()["traceId"]
        assert r.headers["x-trace-id"] == trace_id
        await app.settle()
        # every hop ran under the trace id the API request started
        assert await app.state(trace_id, "b") == trace_id
        assert await app.state(trace_id, "c") == trace_id
        # fan-out: both subscribers of "c" got their own copy
        assert await app.state(trace_id, "audit") == 3
        assert await app.state(trace_id, "notify") == {"n": 3, "flows": ["notify"]}
        records = await app.trace(trace_id)
    ended = [r.step for r in records if r.kind == "end" and r.data["status"] == "ok"]
    assert sorted(ended) == ["Audit", "HopB", "HopC", "Notify", "Start"]
    emits = {r.data["topic"]: r.data["subscribers"] for r in records if r.kind == "emit"}
    assert emits == {"a": ["HopB"], "b": ["HopC"], "c": ["Audit", "Notify"]}
    logs = [r for r in records if r.kind == "log"]
    assert [(r.step, r.data["message"]) for r in logs] == [("Start", "starting"), ("Audit", "audited")]
    assert all(r.trace_id == trace_id for r in records)


async def test_undeclared_emit_names_step_topic_and_declared_list(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            config = {"type": "api", "name": "Leaky", "path": "/leak", "method": "POST", "emits": ["ok.one", "ok.two"]}
            async def handler(req, ctx):
                await ctx.emit({"topic": "secret.topic", "data": {}})
        """,
            "steps/b_step.py": """
            config = {"type": "event", "name": "Sink", "subscribes": ["ok.one", "ok.two", "secret.topic"]}
            async def handler(input, ctx): ...
        """,
        }
    )
    async with serve(root) as app:
        r = await app.client.post("/leak")
        assert r.status_code == 500
        assert r.json()["detail"] == (
            "UndeclaredEmitError: step 'Leaky' emitted topic 'secret.topic', but its config declares "
            "'ok.one', 'ok.two'. Add \"secret.topic\" to the step's \"emits\" list."
        )
        await app.settle()
        assert (await app.stepline.engine.queue.stats()).pending == 0  # nothing was published


async def test_emit_error_type_is_raised_in_the_handler(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            from stepline import UndeclaredEmitError
            config = {"type": "api", "name": "A", "path": "/a", "method": "POST"}
            async def handler(req, ctx):
                try:
                    await ctx.emit("x", {})
                except UndeclaredEmitError as exc:
                    return {"status": 200, "body": {"step": exc.step, "topic": exc.topic, "declared": exc.declared}}
        """,
        }
    )
    async with serve(root) as app:
        assert (await app.client.post("/a")).json() == {"step": "A", "topic": "x", "declared": []}
    assert issubclass(UndeclaredEmitError, Exception)


async def test_input_that_fails_its_schema_is_recorded_and_dead_lettered(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/typed_step.py": """
            from pydantic import BaseModel
            class Payment(BaseModel):
                amount: int
            config = {"type": "event", "name": "Charge", "subscribes": ["pay"], "input": Payment}
            calls = []
            async def handler(input, ctx):
                await ctx.state.set("charged", ctx.trace_id, input["amount"])
        """
        }
    )
    sl = Stepline(root)
    async with sl.lifespan():
        bad = await sl.emit("pay", {"amount": "lots"})
        good = await sl.emit("pay", {"amount": "12"})
        await sl.settle()
        assert await sl.engine.state.get("charged", good.trace_id) == 12  # coerced by the model
        assert await sl.engine.state.get("charged", bad.trace_id) is None
        [dead] = await sl.engine.queue.dead_letters()
        assert dead.step == "Charge" and dead.event.data == {"amount": "lots"} and dead.attempts == 1
        assert "the input of step 'Charge' does not match its schema" in dead.error
        assert "amount" in dead.error
        records = await sl.engine.traces.trace(bad.trace_id)
        failure = next(r for r in records if r.kind == "end")
        assert failure.data["status"] == "error" and failure.data["errors"][0]["path"] == "amount"
        assert [r.kind for r in records][-1] == "dead_letter"


async def test_failing_handler_is_retried_then_dead_lettered(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/flaky_step.py": """
            config = {"type": "event", "name": "Flaky", "subscribes": ["job"],
                      "infrastructure": {"queue": {"maxRetries": 2, "backoff": {"initial": 0.01, "jitter": 0}}}}
            async def handler(input, ctx):
                count = (await ctx.state.get("tries", input["id"]) or 0) + 1
                await ctx.state.set("tries", input["id"], count)
                if count < input["succeed_on"]:
                    raise ValueError(f"try {count} failed")
        """
        }
    )
    sl = Stepline(root)
    async with sl.lifespan():
        await sl.emit("job", {"id": "eventually", "succeed_on": 3})
        doomed = await sl.emit("job", {"id": "never", "succeed_on": 99})
        await sl.settle()
        assert await sl.engine.state.get("tries", "eventually") == 3
        assert await sl.engine.state.get("tries", "never") == 3  # 1 try + 2 retries
        [dead] = await sl.engine.queue.dead_letters()
        assert dead.event.id == doomed.id and dead.attempts == 3
        assert dead.error == "ValueError: try 3 failed" and "Traceback" in (dead.traceback or "")
        kinds = [r.kind for r in await sl.engine.traces.trace(doomed.trace_id)]
        assert kinds.count("retry") == 2 and kinds[-1] == "dead_letter"
        assert await sl.engine.queue.replay(dead.delivery_id)
        await sl.settle()
        # a replay starts with a fresh retry budget, and fails its way back to the dead letters
        assert await sl.engine.state.get("tries", "never") == 6
        [again] = await sl.engine.queue.dead_letters()
        assert again.delivery_id == dead.delivery_id and again.attempts == 3


async def test_handler_timeout_counts_as_a_failure(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/slow_step.py": """
            import asyncio
            config = {"type": "event", "name": "Slow", "subscribes": ["slow"],
                      "infrastructure": {"handler": {"timeout": 0.1}, "queue": {"maxRetries": 0}}}
            async def handler(input, ctx):
                await asyncio.sleep(10)
        """
        }
    )
    sl = Stepline(root)
    async with sl.lifespan():
        await sl.emit("slow", {})
        await sl.settle(timeout=5)
        [dead] = await sl.engine.queue.dead_letters()
        assert dead.error == "timed out after 0.1s"


async def test_state_get_set_delete_get_group_clear(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/state_step.py": """
            config = {"type": "api", "name": "S", "path": "/state", "method": "POST"}
            async def handler(req, ctx):
                s = ctx.state
                out = {}
                await s.set("cart", "b", {"qty": 2})
                await s.set("cart", "a", [1, "x", None, 1.5, True])
                await s.set("other", "k", "v")
                out["get"] = await s.get("cart", "a")
                out["missing"] = await s.get("cart", "zzz")
                out["group"] = await s.get_group("cart")
                out["items"] = await s.items("cart")
                out["deleted"] = await s.delete("cart", "a")
                out["deleted_again"] = await s.delete("cart", "a")
                out["after_delete"] = await s.get_group("cart")
                out["cleared"] = await s.clear("cart")
                out["after_clear"] = await s.get_group("cart")
                out["other"] = await s.get("other", "k")
                try:
                    await s.set("cart", "bad", object())
                except TypeError as exc:
                    out["not_json"] = str(exc)
                value = {"mutable": [1]}
                await s.set("copy", "k", value)
                value["mutable"].append(2)
                out["copied"] = await s.get("copy", "k")
                return {"status": 200, "body": out}
        """
        }
    )
    async with serve(root) as app:
        out = (await app.client.post("/state")).json()
    assert out["get"] == [1, "x", None, 1.5, True]
    assert out["missing"] is None
    assert out["group"] == [[1, "x", None, 1.5, True], {"qty": 2}]
    assert out["items"] == {"a": [1, "x", None, 1.5, True], "b": {"qty": 2}}
    assert out["deleted"] is True and out["deleted_again"] is False
    assert out["after_delete"] == [{"qty": 2}]
    assert out["cleared"] == 1 and out["after_clear"] == []
    assert out["other"] == "v"
    assert "is not JSON" in out["not_json"]
    assert out["copied"] == {"mutable": [1]}


async def test_emit_data_must_be_json(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            config = {"type": "api", "name": "A", "path": "/a", "method": "POST", "emits": ["t"]}
            async def handler(req, ctx):
                await ctx.emit("t", {"when": object()})
        """,
            "steps/b_step.py": 'config = {"type": "event", "name": "B", "subscribes": ["t"]}\n'
            "async def handler(input, ctx): ...\n",
        }
    )
    async with serve(root) as app:
        r = await app.client.post("/a")
    assert r.status_code == 500 and "data of the event 't' is not JSON" in r.json()["detail"]


async def test_stop_waits_for_in_flight_handlers(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/w_step.py": """
            import asyncio
            config = {"type": "event", "name": "W", "subscribes": ["w"]}
            async def handler(input, ctx):
                await asyncio.sleep(0.2)
                await ctx.state.set("done", str(input), True)
        """
        }
    )
    sl = Stepline(root)
    await sl.start()
    for i in range(5):
        await sl.emit("w", i)
    await asyncio.sleep(0.05)
    await sl.engine.stop(grace=5)  # the engine alone: the storage stays open to look at
    assert await sl.engine.state.get_group("done") == {str(i): True for i in range(5)}
    await sl.stop()


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_engine_concurrency_bound(make_project: ProjectFactory, concurrency: int) -> None:
    root = make_project(
        {
            "steps/c_step.py": """
            import asyncio
            running = {"now": 0, "max": 0}
            config = {"type": "event", "name": "C", "subscribes": ["c"]}
            async def handler(input, ctx):
                running["now"] += 1
                running["max"] = max(running["max"], running["now"])
                await asyncio.sleep(0.01)
                running["now"] -= 1
                await ctx.state.set("max", "value", running["max"])
        """
        }
    )
    sl = Stepline(root, concurrency=concurrency)
    async with sl.lifespan():
        for i in range(12):
            await sl.emit("c", i)
        await sl.settle()
        assert await sl.engine.state.get("max", "value") == concurrency
