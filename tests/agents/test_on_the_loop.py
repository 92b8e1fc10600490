"""Human on the loop from the CLI: stop a trace (and resume it), correct state, list pending approvals."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from stepline.cli import app as cli
from stepline.testing import serve

from ..conftest import ProjectFactory
from .test_approvals import FLOW

runner = CliRunner()

AGENT = {
    "steps/start_step.py": """
        config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["think"]}
        async def handler(req, ctx):
            await ctx.emit("think", {"step": 1}, delay=2.0)  # a stop takes effect within a second
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/think_step.py": """
        config = {"type": "event", "name": "Think", "subscribes": ["think"]}
        async def handler(input, ctx):
            await ctx.state.set("thoughts", ctx.trace_id, await ctx.state.get("config", "mood"))
    """,
}


async def stepline(*args: str) -> str:
    """Run the CLI; its output (messages go to stderr, data to stdout)."""
    result = await asyncio.to_thread(runner.invoke, cli, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_stopped_trace_runs_nothing_more_until_resumed_and_replayed(make_project: ProjectFactory) -> None:
    root = make_project(AGENT)
    d = str(root)
    async with serve(root) as app:
        trace_id = (await app.client.post("/start", json={})).json()["traceId"]
        assert "Stopped trace" in await stepline("traces", "stop", trace_id, "--dir", d, "--reason", "looping")
        await stepline("state", "set", "config", "mood", '"calm"', "--dir", d)  # a correction while stopped
        await app.settle()
        assert await app.state("thoughts", trace_id) is None  # the delayed step did not run
        (dead,) = await app.stepline.dead_letters()
        assert dead.event.trace_id == trace_id and "stopped by a person" in dead.error

        await stepline("traces", "resume", trace_id, "--dir", d)
        await stepline("dlq", "replay", "--all", "--dir", d)  # at once: the engine checks a mark before it acts
        await app.settle()
        assert await app.state("thoughts", trace_id) == "calm"  # it ran, with the corrected state
    assert json.loads(await stepline("state", "get", "config", "mood", "--dir", d)) == "calm"


async def test_approvals_lists_what_waits_for_a_person(make_project: ProjectFactory) -> None:
    root: Path = make_project(FLOW)
    async with serve(root) as app:
        await app.client.post("/drafts/d9", json={"text": "budget", "timeout": 3600})
    listed = json.loads(await stepline("approvals", "--dir", str(root), "--json"))
    assert [(a["name"], a["key"], a["data"]) for a in listed] == [("draft", "d9", {"text": "budget"})]
    assert "draft/d9" in await stepline("approvals", "--dir", str(root))
