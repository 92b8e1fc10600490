"""`app.run_step`: one handler alone, with its real ctx; its emits are kept, and nothing after it runs."""

from __future__ import annotations

import pytest

from stepline._errors import SchemaValidationError, UndeclaredEmitError
from stepline.testing import Emitted, serve

from .conftest import ProjectFactory

FILES = {
    "steps/first_step.py": """
        config = {"type": "event", "name": "First", "subscribes": ["a"], "emits": ["b"],
                  "input": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
        async def handler(input, ctx):
            ctx.logger.info("first", {"n": input["n"]})
            await ctx.emit({"topic": "b", "data": {"n": input["n"] + 1}, "messageGroupId": "g"})
            await ctx.emit("b", {"n": 0}, delay=5)
            return "done"
    """,
    "steps/second_step.py": """
        config = {"type": "event", "name": "Second", "subscribes": ["b"], "emits": []}
        async def handler(input, ctx):
            await ctx.state.set("second", "ran", True)
    """,
    "steps/rogue_step.py": """
        config = {"type": "event", "name": "Rogue", "subscribes": ["r"], "emits": []}
        async def handler(input, ctx):
            await ctx.emit("b", {})
    """,
    "steps/early_step.py": """
        config = {"type": "event", "name": "Early", "subscribes": ["e"], "emits": ["b"]}
        async def handler(input, ctx):
            await ctx.emit("b", {}, delay=-1)
    """,
    "steps/api_step.py": """
        config = {"type": "api", "name": "Api", "path": "/x", "method": "POST"}
        def handler(req, ctx):   # a sync handler: run on a thread, with a blocking ctx
            ctx.state.set("api", "body", req.body)
            return {"status": 201, "body": req.body}
    """,
    "steps/nightly_step.py": """
        config = {"type": "cron", "name": "Nightly", "cron": "0 3 * * *", "emits": ["b"]}
        async def handler(ctx):
            await ctx.emit("b", {"n": -1})
    """,
}


async def test_an_event_step_runs_alone_and_its_emits_are_kept(make_project: ProjectFactory) -> None:
    async with serve(make_project(FILES), store="memory://") as app:
        run = await app.run_step("First", {"n": 1})
        assert run.result == "done"
        assert run.emitted == [Emitted("b", {"n": 2}, message_group_id="g"), Emitted("b", {"n": 0}, delay=5)]
        assert run.topics() == ["b", "b"]
        await app.settle()
        assert await app.state("second", "ran") is None  # nothing was delivered
        logs = [r for r in await app.trace(run.trace_id) if r.kind == "log"]
        assert [r.data["message"] for r in logs] == ["first"]
        with pytest.raises(SchemaValidationError, match="n"):
            await app.run_step("First", {"n": "one"})
        with pytest.raises(UndeclaredEmitError):
            await app.run_step("Rogue", {})
        with pytest.raises(ValueError, match="delay must be >= 0"):  # checked as a real emit checks it
            await app.run_step("Early", {})
        with pytest.raises(KeyError, match="no step 'Nope'"):
            await app.run_step("Nope")


async def test_api_and_cron_steps_run_alone(make_project: ProjectFactory) -> None:
    async with serve(make_project(FILES), store="memory://") as app:
        run = await app.run_step("Api", {"a": 1})
        assert run.result == {"status": 201, "body": {"a": 1}}
        assert await app.state("api", "body") == {"a": 1}
        cron = await app.run_step("Nightly")
        assert cron.emitted == [Emitted("b", {"n": -1})]
