"""The `stepline` command: graph, routes, check and emit."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from stepline.cli import app
from stepline.testing import serve

from .conftest import ProjectFactory

runner = CliRunner()

FLOW = {
    "steps/api/request_step.py": """
        config = {"type": "api", "name": "Request", "path": "/reports", "method": "POST",
                  "emits": ["report.requested"], "flows": ["reports"]}
        async def handler(req, ctx):
            await ctx.emit("report.requested", req.body)
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/work/draft_step.py": """
        config = {"type": "event", "name": "Draft", "subscribes": ["report.requested"],
                  "emits": [{"topic": "report.drafted", "label": "draft ready"}], "flows": ["reports/drafting"]}
        async def handler(input, ctx):
            await ctx.state.set("drafts", ctx.trace_id, input)
            await ctx.emit("report.drafted", input)
    """,
    "steps/work/gate_step.py": """
        config = {"type": "noop", "name": "Approval", "virtualSubscribes": ["report.drafted"],
                  "virtualEmits": ["report.approved"], "flows": ["reports"]}
    """,
    "steps/work/send_step.py": """
        config = {"type": "event", "name": "Send", "subscribes": ["report.approved"], "flows": ["reports"]}
        async def handler(input, ctx): ...
    """,
    "steps/nightly_step.py": """
        config = {"type": "cron", "name": "Nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris"}
        async def handler(ctx): ...
    """,
}


def test_graph_text(make_project: ProjectFactory) -> None:
    result = runner.invoke(app, ["graph", "--dir", str(make_project(FLOW))], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "api   Request  POST /reports" in out
    assert "report.requested → Draft" in out
    assert "report.drafted ⇢ Approval" in out
    assert "report.approved ⇢ Send" in out
    assert "cron 0 2 * * * (Europe/Paris)" in out


def test_graph_mermaid_and_flow_filter(make_project: ProjectFactory) -> None:
    root = str(make_project(FLOW))
    result = runner.invoke(app, ["graph", "--dir", root, "--format", "mermaid"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "flowchart LR"
    assert "    Request -->|report.requested| Draft" in lines
    assert "    Draft -.->|draft ready| Approval" in lines  # the emit's label, as Motia draws it
    assert "    Approval -.->|report.approved| Send" in lines
    assert any(line.startswith("    Approval{{") for line in lines)

    nested = runner.invoke(app, ["graph", "--dir", root, "--format", "json", "--flow", "reports"])
    names = {s["name"] for s in json.loads(nested.stdout)["steps"]}
    assert names == {"Request", "Draft", "Approval", "Send"}  # reports/drafting is inside reports
    only = runner.invoke(app, ["graph", "--dir", root, "--format", "json", "--flow", "reports/drafting"])
    assert [s["name"] for s in json.loads(only.stdout)["steps"]] == ["Draft"]


def test_routes_json_and_table(make_project: ProjectFactory) -> None:
    root = str(make_project(FLOW))
    result = runner.invoke(app, ["routes", "--dir", root, "--json"])
    assert json.loads(result.stdout) == [
        {
            "method": "POST",
            "path": "/reports",
            "step": "Request",
            "file": "steps/api/request_step.py",
            "emits": ["report.requested"],
        }
    ]
    table = runner.invoke(app, ["routes", "--dir", root], env={"COLUMNS": "200"})
    assert "POST" in table.output and "/reports" in table.output


def test_check_reports_problems_and_exit_code(make_project: ProjectFactory) -> None:
    root = make_project(FLOW)
    ok = runner.invoke(app, ["check", "--dir", str(root), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout) == {"ok": True, "steps": 5, "problems": []}
    (root / "steps/broken_step.py").write_text('config = {"type": "cron", "name": "B", "cron": "nope"}\n')
    bad = runner.invoke(app, ["check", "--dir", str(root)], env={"COLUMNS": "200"})
    assert bad.exit_code == 1
    assert "steps/broken_step.py:1 cron" in bad.output and "fix:" in bad.output
    as_json = json.loads(runner.invoke(app, ["check", "--dir", str(root), "--json"]).stdout)
    assert as_json["ok"] is False
    assert {(p["file"], p["field"]) for p in as_json["problems"]} == {
        ("steps/broken_step.py", "cron"),
        ("steps/broken_step.py", "handler"),
    }


def test_emit_local_runs_the_subscribers_in_process(make_project: ProjectFactory) -> None:
    root = make_project(FLOW)
    result = runner.invoke(
        app,
        [
            "emit",
            "--dir",
            str(root),
            "--local",
            "--topic",
            "report.requested",
            "--data",
            '{"month": "2026-10"}',
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["subscribers"] == ["Draft"] and len(out["traceId"]) == 36


def test_emit_rejects_bad_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["emit", "--topic", "t", "--data", "{nope"])
    assert result.exit_code == 2 and "--data is not JSON" in result.output


def test_emit_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["emit", "--topic", "t", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "No server at http://127.0.0.1:9" in result.output


async def test_emit_to_a_running_server(make_project: ProjectFactory) -> None:
    async with serve(make_project(FLOW)) as app_:
        # the CLI is synchronous; run it off the loop so the server can answer
        import asyncio

        result = await asyncio.to_thread(
            runner.invoke,
            app,
            ["emit", "--url", app_.url, "--topic", "report.requested", "--data", '{"n": 1}', "--json"],
        )
        assert result.exit_code == 0, result.output
        trace_id = json.loads(result.stdout)["traceId"]
        await app_.settle()
        assert await app_.state("drafts", trace_id) == {"n": 1}


def test_unloadable_project_exits_with_the_problems(tmp_path: Path) -> None:
    result = runner.invoke(app, ["routes", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "there is no steps/ folder" in result.output
