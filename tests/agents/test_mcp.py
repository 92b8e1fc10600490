"""MCP both ways: `stepline mcp` serves steps as tools to a real MCP client; an agent uses an MCP server's tools."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from stepline.testing import Answer, ScriptedLLM, serve

from ..conftest import ProjectFactory

STEPLINE = str(Path(sys.executable).parent / "stepline")

WEATHER = {
    "stepline.toml": """
        [mcp]
        steps = ["GetWeather"]
        topics = ["weather.alert"]
    """,
    "steps/weather_step.py": """
        config = {"type": "api", "name": "GetWeather", "path": "/weather/{city}", "method": "GET",
                  "description": "Today's weather in a city."}
        async def handler(req, ctx):
            if req.path_params["city"] == "Atlantis":
                return {"status": 404, "body": {"error": "no such city"}}
            return {"city": req.path_params["city"], "sky": "sunny", "celsius": 21}
    """,
    "steps/alert_step.py": """
        from pydantic import BaseModel

        class Alert(BaseModel):
            city: str
            level: int

        config = {"type": "event", "name": "Alert", "subscribes": ["weather.alert"], "input": Alert}
        async def handler(alert, ctx):
            ctx.logger.info("alert", alert)
    """,
}


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


async def test_a_real_mcp_client_lists_and_calls_the_projects_tools(make_project: ProjectFactory) -> None:
    root = make_project(WEATHER)
    server = StdioServerParameters(command=STEPLINE, args=["mcp", "--dir", str(root), "--engine", "memory"])
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"GetWeather", "emit_weather_alert"}
        assert tools["GetWeather"].description == "Today's weather in a city."
        assert tools["GetWeather"].input_schema["required"] == ["city"]
        assert tools["emit_weather_alert"].input_schema["required"] == ["city", "level"]

        result = await session.call_tool("GetWeather", {"city": "Oslo"})
        assert not result.is_error
        assert result.structured_content == {"status": 200, "body": {"city": "Oslo", "sky": "sunny", "celsius": 21}}

        missing = await session.call_tool("GetWeather", {"city": "Atlantis"})
        assert missing.is_error and missing.structured_content["status"] == 404

        emitted = await session.call_tool("emit_weather_alert", {"city": "Oslo", "level": 2})
        assert not emitted.is_error and emitted.structured_content["emitted"] == "weather.alert"

        bad = await session.call_tool("emit_weather_alert", {"city": "Oslo", "level": "high"})
        assert bad.is_error and "level" in json.loads(bad.content[0].text)["error"]


async def test_an_agent_uses_the_tools_of_an_mcp_server(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    weather = make_project(WEATHER)
    agent_root = weather.parent / "agent"
    (agent_root / "steps").mkdir(parents=True)
    (agent_root / "steps" / "ask_step.py").write_text(
        f"""
from stepline import mcp_tools

config = {{"type": "api", "name": "Ask", "path": "/ask", "method": "POST"}}

async def handler(req, ctx):
    server = [{STEPLINE!r}, "mcp", "--dir", {str(weather)!r}, "--engine", "memory"]
    async with mcp_tools(server, prefix="weather_") as tools:
        reply = await ctx.llm.run(req.body["q"], tools=tools)
    return {{"answer": reply.text, "runs": [[r.name, r.result, r.error] for r in reply.tool_runs]}}
"""
    )
    llm.add(Answer.tool_call("weather_GetWeather", {"city": "Oslo"}), "Sunny, 21 degrees.")
    async with serve(agent_root, llm=llm.settings(), store="memory://") as app:
        r = await app.client.post("/ask", json={"q": "Weather in Oslo?"})
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "Sunny, 21 degrees."
    assert body["runs"] == [
        ["weather_GetWeather", {"status": 200, "body": {"city": "Oslo", "sky": "sunny", "celsius": 21}}, None]
    ]
    offered = llm.requests[0]["tools"][0]["function"]
    assert offered["name"] == "weather_GetWeather" and offered["description"] == "Today's weather in a city."


DECIDING = {
    **WEATHER,
    "steps/refund_step.py": """
        config = {"type": "api", "name": "ApproveRefund", "path": "/refunds/{id}/approve", "method": "POST"}
        async def handler(req, ctx):
            await ctx.state.set("refunds", req.path_params["id"], "approved")
            return {"approved": req.path_params["id"]}
    """,
}


async def _served(root: Path, errlog: Any) -> tuple[set[str], str | None, Any]:
    server = StdioServerParameters(command=STEPLINE, args=["mcp", "--dir", str(root), "--engine", "memory"])
    async with stdio_client(server, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        tools = {t.name for t in (await session.list_tools()).tools}
        refused = await session.call_tool("ApproveRefund", {"id": "r1"})
    return tools, init.instructions, refused


async def test_mcp_serves_only_the_steps_and_topics_listed_in_stepline_toml(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    root = make_project(DECIDING)
    with (tmp_path / "stderr.txt").open("w+") as errlog:
        tools, instructions, refused = await _served(root, errlog)
        errlog.seek(0)
        logged = errlog.read()
    assert instructions is not None and "[mcp]" in instructions
    assert tools == {"GetWeather", "emit_weather_alert"}  # not ApproveRefund: a model must not approve refunds
    assert refused.is_error and "no tool 'ApproveRefund'" in refused.content[0].text
    assert "serves 2 tools: GetWeather, emit_weather_alert" in logged


async def test_with_nothing_listed_mcp_serves_nothing_and_says_how_to_expose_tools(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    root = make_project({k: v for k, v in DECIDING.items() if k != "stepline.toml"})
    with (tmp_path / "stderr.txt").open("w+") as errlog:
        tools, instructions, refused = await _served(root, errlog)
        errlog.seek(0)
        logged = errlog.read()
    assert tools == set() and refused.is_error
    assert instructions is not None and "serves no tools yet" in instructions
    assert "[mcp] in stepline.toml" in instructions and 'steps = ["GetWeather"]' in instructions
    assert "stepline mcp serves no tools" in logged and "[mcp] in stepline.toml" in logged


def test_mcp_refuses_to_start_when_stepline_toml_lists_what_the_project_lacks(make_project: ProjectFactory) -> None:
    import subprocess

    toml = '[mcp]\nsteps = ["GetWether", "Alert"]\ntopics = ["weather.alarm"]\n'
    root = make_project({**WEATHER, "stepline.toml": toml})
    done = subprocess.run(
        [STEPLINE, "mcp", "--dir", str(root), "--engine", "memory"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 1
    assert "mcp.steps" in done.stderr and "no step 'GetWether'" in done.stderr and "GetWeather" in done.stderr
    assert "'Alert' is a event step" in done.stderr and "weather.alert" in done.stderr
    assert "mcp.topics" in done.stderr and "no step subscribes to 'weather.alarm'" in done.stderr


COUNTED = {
    **WEATHER,
    # Runs once per `stepline mcp` process, when the project loads: a line per server start.
    "steps/started_step.py": """
        import os
        from pathlib import Path
        with (Path(__file__).parent.parent / "starts.txt").open("a") as starts:
            starts.write(f"{os.getpid()}\\n")
        config = {"type": "noop", "name": "Started"}
    """,
}


async def test_mcp_tools_keeps_one_session_per_server_and_closes_it_at_shutdown(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    weather = make_project(COUNTED)
    agent_root = weather.parent / "agent"
    (agent_root / "steps").mkdir(parents=True)
    (agent_root / "steps" / "ask_step.py").write_text(
        f"""
import time
from stepline import mcp_tools

config = {{"type": "api", "name": "Ask", "path": "/ask", "method": "POST"}}

async def handler(req, ctx):
    server = [{STEPLINE!r}, "mcp", "--dir", {str(weather)!r}, "--engine", "memory"]
    started = time.perf_counter()
    async with mcp_tools(server, prefix="weather_") as tools:
        listed = time.perf_counter() - started
        reply = await ctx.llm.run(req.body["q"], tools=tools)
    return {{"answer": reply.text, "seconds": listed}}
"""
    )
    for city in ("Oslo", "Rome", "Lima"):
        llm.add(Answer.tool_call("weather_GetWeather", {"city": city}), f"Sunny in {city}.")
    async with serve(agent_root, llm=llm.settings(), store="memory://") as app:
        first = (await app.client.post("/ask", json={"q": "Oslo?"})).json()
        second = (await app.client.post("/ask", json={"q": "Rome?"})).json()
        third = (await app.client.post("/ask", json={"q": "Lima?"})).json()
        assert [first["answer"], second["answer"], third["answer"]] == [
            "Sunny in Oslo.",
            "Sunny in Rome.",
            "Sunny in Lima.",
        ]
        (pid,) = (weather / "starts.txt").read_text().split()  # one server start for three calls
        assert _running(int(pid))
    print(
        f"mcp_tools: first call {first['seconds']:.3f} s, second {second['seconds']:.3f} s, "
        f"third {third['seconds']:.3f} s"
    )
    assert second["seconds"] < first["seconds"] / 5
    assert not _running(int(pid))  # the app's shutdown ended the server


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_star_in_the_mcp_table_serves_every_api_step_or_every_subscribed_topic(make_project: ProjectFactory) -> None:
    from stepline import Stepline
    from stepline.cli.mcp import exposed
    from stepline.steps.settings import McpSettings

    app = Stepline(make_project(DECIDING), store="memory://")
    steps, topics, problems = exposed(app.engine, McpSettings(steps=["*"], topics=["*"]))
    assert sorted(s.name for s in steps) == ["ApproveRefund", "GetWeather"] and topics == ["weather.alert"]
    assert problems == []
    steps, topics, problems = exposed(app.engine, McpSettings())
    assert (steps, topics, problems) == ([], [], [])
