"""`stepline dlq`, `traces` and `state`, and the admin API the Workbench reads, on a project run on Redis:
the same answers as on SQLite (tests/test_runtime_cli.py), from another process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from stepline.cli import app
from stepline.testing import serve

from ..conftest import ProjectFactory
from ..test_runtime_cli import FAILING

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


async def _run_failing_order(root: Path, store: str) -> str:
    async with serve(root, store=store) as running:
        response = await running.client.post("/orders", json={"sku": "tea-1"})
        trace_id = str(response.json()["traceId"])
        await running.settle()
        # The admin API (what the Workbench shows) reads the same store.
        listed = (await running.client.get("/__stepline/api/traces")).json()
        assert trace_id in [t["traceId"] for t in listed]
        dead = (await running.client.get("/__stepline/api/dead-letters")).json()
        assert [d["step"] for d in dead] == ["Ship"]
    return trace_id


async def _run_until_settled(root: Path, store: str) -> None:
    async with serve(root, store=store) as running:
        await running.settle()


def test_the_runtime_commands_and_the_admin_api_read_redis(make_project: ProjectFactory, redis_store: str) -> None:
    root = make_project(FAILING)
    where = ["--dir", str(root), "--store", redis_store]
    trace_id = asyncio.run(_run_failing_order(root, redis_store))
    [dead] = json.loads(invoke("dlq", "list", *where, "--json"))
    assert (dead["step"], dead["attempts"], dead["traceId"]) == ("Ship", 2, trace_id)
    assert "ValueError: no courier for tea-1" in invoke("dlq", "show", dead["id"], *where)
    traces = json.loads(invoke("traces", *where, "--json"))
    assert trace_id in [t["traceId"] for t in traces]
    shown = invoke("traces", "show", trace_id, *where)
    assert "Ship" in shown and "no courier" in shown
    invoke("state", "set", "fixed", "ship", "true", *where)
    assert json.loads(invoke("state", "get", "fixed", "ship", *where)) is True
    assert "fixed" in invoke("state", "groups", *where)
    assert "replayed 1" in runner.invoke(app, ["dlq", "replay", dead["id"], *where]).output
    asyncio.run(_run_until_settled(root, redis_store))  # the fix in state: the replay runs through
    assert json.loads(invoke("state", "get", "shipped", "tea-1", *where)) is True
    assert json.loads(invoke("dlq", "list", *where, "--json")) == []
