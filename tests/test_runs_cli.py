"""`stepline runs` and the admin API's /runs against a project's SQLite file: list, show, cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from stepline import Stepline
from stepline.cli import app
from stepline.testing import serve

from .conftest import ProjectFactory

runner = CliRunner()

WAITER = {
    "steps/wait_step.py": """
        config = {"type": "event", "name": "AwaitPayment", "subscribes": ["order.placed"],
                  "waitsFor": ["payment.received"]}
        async def handler(input, ctx):
            await ctx.step("reserve", lambda: {"reserved": input["order"]})
            await ctx.wait_for("payment.received", {"order": input["order"]}, timeout=86400)
            await ctx.state.set("paid", input["order"], True)
    """,
}


async def _suspend_one(root: Path) -> str:
    stepline = Stepline(root)
    await stepline.start()
    try:
        event = await stepline.emit("order.placed", {"order": "o-7"})
        await stepline.settle()
        return event.trace_id
    finally:
        await stepline.stop()


def test_runs_list_show_and_cancel(make_project: ProjectFactory) -> None:
    root = make_project(WAITER)
    trace_id = asyncio.run(_suspend_one(root))
    listed = runner.invoke(app, ["runs", "list", "--suspended", "--dir", str(root)])
    assert listed.exit_code == 0, listed.output
    assert "AwaitPayment" in listed.output and "waiting for payment.received" in listed.output
    assert "'order': 'o-7'" in listed.output and "until" in listed.output
    [run] = json.loads(runner.invoke(app, ["runs", "list", "--json", "--dir", str(root)]).output)
    assert run["trace_id"] == trace_id and run["status"] == "suspended"
    shown = runner.invoke(app, ["runs", "show", run["id"], "--dir", str(root)])
    assert shown.exit_code == 0 and "reserve" in shown.output and "o-7" in shown.output
    missing = runner.invoke(app, ["runs", "show", "nope", "--dir", str(root)])
    assert missing.exit_code == 1 and "No durable run nope" in missing.output
    cancelled = runner.invoke(app, ["runs", "cancel", run["id"], "--reason", "customer called", "--dir", str(root)])
    assert cancelled.exit_code == 0, cancelled.output
    asyncio.run(_settle_and_check(root, trace_id))
    assert "No durable runs" in runner.invoke(app, ["runs", "list", "--dir", str(root)]).output
    again = runner.invoke(app, ["runs", "cancel", run["id"], "--dir", str(root)])
    assert again.exit_code == 1 and "No run" in again.output


async def _settle_and_check(root: Path, trace_id: str) -> None:
    async with serve(root) as running:
        await running.settle()
        ends = [r for r in await running.trace(trace_id) if r.kind == "end"]
        assert ends[-1].data["status"] == "cancelled" and "customer called" in ends[-1].data["error"]
        assert await running.state("paid", "o-7") is None


async def test_the_admin_api_lists_shows_and_cancels_runs(make_project: ProjectFactory) -> None:
    root = make_project(WAITER)
    async with serve(root) as running:
        await running.emit("order.placed", {"order": "o-8"})
        await running.settle()
        api = "/__stepline/api/runs"
        [run] = (await running.client.get(api, params={"suspended": "1"})).json()
        assert run["waiting"]["kind"] == "wait" and run["waiting"]["match"] == {"order": "o-8"}
        detail = (await running.client.get(f"{api}/{run['id']}")).json()
        assert [e["kind"] for e in detail["journal"].values()] == ["step", "wait"]
        assert (await running.client.get(f"{api}/nope")).status_code == 404
        assert (await running.client.post(f"{api}/{run['id']}/cancel", json={"reason": "test"})).status_code == 202
        await running.settle()
        assert (await running.client.get(api)).json() == []
        assert (await running.client.post(f"{api}/{run['id']}/cancel")).status_code == 404


def test_emit_local_says_a_run_is_suspended_not_failed(make_project: ProjectFactory) -> None:
    root = make_project(WAITER)
    result = runner.invoke(
        app, ["emit", "--local", "-t", "order.placed", "--data", '{"order": "o-9"}', "--dir", str(root)]
    )
    assert result.exit_code == 0, result.output
    assert "suspended AwaitPayment: waiting for payment.received matching {'order': 'o-9'}" in result.output
    assert "failed" not in result.output and "stepline runs show" in result.output
