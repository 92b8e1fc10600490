"""`stepline dlq` and `stepline traces` against a project's SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from stepline import Stepline
from stepline.cli import app

from .conftest import ProjectFactory

runner = CliRunner()

FAILING = {
    "steps/api_step.py": """
        config = {"type": "api", "name": "Order", "path": "/orders", "method": "POST", "emits": ["order.placed"]}
        async def handler(req, ctx):
            ctx.logger.info("order received", {"sku": req.body["sku"]})
            await ctx.emit("order.placed", req.body)
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/ship_step.py": """
        config = {"type": "event", "name": "Ship", "subscribes": ["order.placed"],
                  "infrastructure": {"queue": {"maxRetries": 1, "backoff": {"initial": 0.01, "jitter": 0}}}}
        async def handler(input, ctx):
            if await ctx.state.get("fixed", "ship") is None:
                raise ValueError(f"no courier for {input['sku']}")
            await ctx.state.set("shipped", input["sku"], True)
    """,
}


async def _run_failing_order(root: Path) -> str:
    from stepline.testing import serve

    async with serve(root) as running:
        response = await running.client.post("/orders", json={"sku": "tea-1"})
        await running.settle()
        return str(response.json()["traceId"])


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_dlq_list_show_replay_purge(make_project: ProjectFactory) -> None:
    root = make_project(FAILING)
    trace_id = asyncio.run(_run_failing_order(root))
    d = str(root)
    [dead] = json.loads(invoke("dlq", "list", "--dir", d, "--json"))
    assert (dead["step"], dead["topic"], dead["attempts"], dead["traceId"]) == ("Ship", "order.placed", 2, trace_id)
    assert dead["error"] == "ValueError: no courier for tea-1" and dead["data"] == {"sku": "tea-1"}
    assert "Ship" in invoke("dlq", "list", "--dir", d)
    shown = invoke("dlq", "show", dead["id"], "--dir", d)
    assert "ValueError: no courier for tea-1" in shown and "Traceback" in shown and '"sku": "tea-1"' in shown

    async def fix_and_replay() -> None:  # fix the cause, replay from the CLI, and the delivery goes through
        sl = Stepline(root)
        async with sl.lifespan():
            await sl.engine.state.set("fixed", "ship", True)
            replayed = await asyncio.to_thread(runner.invoke, app, ["dlq", "replay", dead["id"], "--dir", d])
            assert "replayed 1" in replayed.output
            await sl.settle()
            assert await sl.engine.state.get("shipped", "tea-1") is True
            assert await sl.dead_letters() == []

    asyncio.run(fix_and_replay())

    # purge needs an id or --all
    assert runner.invoke(app, ["dlq", "purge", "--dir", d]).exit_code == 2
    assert "purged 0" in runner.invoke(app, ["dlq", "purge", "--all", "--dir", d]).output
    missing = runner.invoke(app, ["dlq", "show", "nope", "--dir", d])
    assert missing.exit_code == 1 and "No dead letter nope" in missing.output


def test_traces_list_and_show(make_project: ProjectFactory) -> None:
    root = make_project(FAILING)
    trace_id = asyncio.run(_run_failing_order(root))
    d = str(root)
    [summary] = json.loads(invoke("traces", "--dir", d, "--json"))
    assert summary["traceId"] == trace_id and summary["entry"] == "POST /orders" and summary["errors"] == 2
    assert trace_id in invoke("traces", "--dir", d)
    tree = invoke("traces", "show", trace_id, "--dir", d)
    for expected in (
        "POST /orders",
        "Order",
        "order received",
        "sku='tea-1'",
        "emit order.placed → Ship",
        "Ship on order.placed",
        "retry in 0.01 s",
        "(attempt 2)",
        "dead letter Ship after 2 attempts",
        "ValueError: no courier for tea-1",
    ):
        assert expected in tree, expected
    records = json.loads(invoke("traces", "show", trace_id, "--dir", d, "--json"))
    assert [r["kind"] for r in records][:2] == ["trigger", "start"]


def test_no_database_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["traces", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "there is no database at" in result.output
    assert "run the project first" in result.output


FAN_OUT = {
    "steps/fan_step.py": """
        config = {"type": "api", "name": "Fan", "path": "/fan", "method": "POST", "emits": ["item"]}
        async def handler(req, ctx):
            for n in (1, 2):
                await ctx.emit("item", {"n": n})
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/item_step.py": """
        import asyncio
        config = {"type": "event", "name": "Item", "subscribes": ["item"]}
        async def handler(input, ctx):
            ctx.logger.info(f"begin {input['n']}")
            await asyncio.sleep(0.4 if input["n"] == 1 else 0.1)  # the runs overlap; 2 ends first
            await ctx.state.set("items", str(input["n"]), True)
            ctx.logger.info(f"done {input['n']}")
    """,
}


def test_traces_show_keeps_overlapping_runs_of_one_step_apart(make_project: ProjectFactory) -> None:
    from stepline.cli.runtime import trace_tree
    from stepline.testing import serve

    async def fan() -> tuple[str, list[object]]:
        async with serve(make_project(FAN_OUT)) as running:
            trace_id = (await running.client.post("/fan")).json()["traceId"]
            await running.settle()
            return trace_id, await running.trace(trace_id)

    trace_id, records = asyncio.run(fan())
    runs = [node for node in trace_tree(trace_id, records).children if "Item" in str(node.label)]  # type: ignore[arg-type]
    assert len(runs) == 2
    for run in runs:
        lines = [str(child.label) for child in run.children]
        n = "1" if any("begin 1" in line for line in lines) else "2"
        shown = [line.split("ms[/] ", 1)[1] for line in lines]
        expected = [f"info begin {n}", f"state set items/{n}", f"info done {n}", "[green]ok[/]"]
        assert len(shown) == len(expected) and all(a.startswith(b) for a, b in zip(shown, expected, strict=True)), lines
