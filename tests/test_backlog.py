"""A per-step backlog limit (`infrastructure.queue.maxBacklog`): past it, an API step's emit answers 503
with Retry-After instead of queueing; the work already accepted is untouched; below it again, requests
are accepted. On every store."""

from __future__ import annotations

import asyncio

import pytest

from stepline.testing import serve

from .conftest import ProjectFactory

PROJECT = {
    "steps/intake_step.py": """
        config = {"type": "api", "name": "Intake", "path": "/jobs", "method": "POST", "emits": ["job"]}
        async def handler(req, ctx):
            await ctx.emit("job", req.body)
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/fanout_api_step.py": """
        config = {"type": "api", "name": "FanoutApi", "path": "/fanout", "method": "POST", "emits": ["fanout"]}
        async def handler(req, ctx):
            await ctx.emit("fanout", {})
            return {"status": 202}
    """,
    "steps/fanout_step.py": """
        config = {"type": "event", "name": "Fanout", "subscribes": ["fanout"], "emits": ["job"]}
        async def handler(input, ctx):
            for i in range(5):  # an event step's emits are work already accepted: never refused
                await ctx.emit("job", {"n": 100 + i})
    """,
    "steps/ping_step.py": """
        config = {"type": "api", "name": "Ping", "path": "/ping", "method": "GET"}
        async def handler(req, ctx):
            return {"status": 200, "body": {"ok": True}}
    """,
    "steps/job_step.py": """
        import asyncio
        config = {"type": "event", "name": "Job", "subscribes": ["job"],
                  "infrastructure": {"queue": {"maxBacklog": 3}}}
        async def handler(input, ctx):
            while not await ctx.state.get("gate", "open"):  # the workers are slow until the test says so
                await asyncio.sleep(0.02)
            await ctx.state.set("done", str(input["n"]), True)
    """,
}


async def test_an_api_emit_past_the_backlog_limit_is_refused_with_503(
    make_project: ProjectFactory, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_project(PROJECT)
    async with serve(root, store=store) as running:
        client = running.client
        for n in range(3):
            assert (await client.post("/jobs", json={"n": n})).status_code == 202
        refused = await client.post("/jobs", json={"n": 3})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        body = refused.json()
        assert "step 'Job' has 3 events waiting (its maxBacklog is 3)" in body["error"] and body["traceId"]
        assert (await client.get("/ping")).status_code == 200  # other routes are not held up
        # An event step's emits to the same step are not intake: all five are queued, past the limit.
        assert (await client.post("/fanout")).status_code == 202
        for _ in range(200):
            if await running.stepline.engine.queue.backlog("Job") == 8:
                break
            await asyncio.sleep(0.02)
        assert await running.stepline.engine.queue.backlog("Job") == 8
        # The admin API's emit is intake too.
        admin = await client.post("/__stepline/api/emit", json={"topic": "job", "data": {"n": 4}})
        assert admin.status_code == 503 and admin.headers["retry-after"] == "1"
        await running.stepline.engine.state.set("gate", "open", True)
        await running.settle()
        done = await running.stepline.engine.state.get_group("done")
        assert sorted(done) == ["0", "1", "100", "101", "102", "103", "104", "2"]  # nothing refused was run
        await asyncio.sleep(0.15)  # the counted backlog is trusted for 0.1 s
        assert (await client.post("/jobs", json={"n": 5})).status_code == 202  # drained: accepted again
        # Said once when it began refusing and once when it stopped; no error per refused request.
        assert caplog.text.count("has 3 events waiting (its maxBacklog is 3)") == 1
        assert "is below its maxBacklog again" in caplog.text and "failed: BacklogFullError" not in caplog.text
        await running.settle()
        assert await running.stepline.engine.state.get("done", "5") is True
        assert await running.stepline.engine.queue.dead_letters() == []
