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


async def test_stepline_keeps_its_own_records_out_of_user_state(make_project: ProjectFactory) -> None:
    """Approvals and stop marks are in the store's control state: `state groups` and the admin API show only
    the user's groups, and a user group that happens to be called "approvals" collides with nothing."""
    root: Path = make_project(FLOW)
    d = str(root)
    async with serve(root) as app:
        await stepline("state", "set", "approvals", "d5", '"mine"', "--dir", d)  # a user group of that name
        trace_id = (await app.client.post("/drafts/d5", json={"text": "own", "timeout": 3600})).json()["traceId"]
        await stepline("traces", "stop", trace_id, "--dir", d)
        await app.settle()
        assert json.loads(await stepline("state", "groups", "--dir", d, "--json")) == ["approvals"]
        assert (await app.client.get("/__stepline/api/state")).json() == ["approvals"]
        assert (await app.client.get("/__stepline/api/state/approvals")).json() == {"d5": "mine"}
        assert (await app.client.get(f"/__stepline/api/traces/{trace_id}")).json()["stopped"] is True
        (pending,) = (await app.client.get("/approvals")).json()  # the approval is untouched by the user's row
        assert (pending["key"], pending["status"]) == ("d5", "pending")
    assert "draft/d5" in await stepline("approvals", "--dir", d)
