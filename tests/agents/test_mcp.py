"""MCP both ways: `stepline mcp` serves steps as tools to a real MCP client; an agent uses an MCP server's tools."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from stepline.testing import Answer, ScriptedLLM, serve

from ..conftest import ProjectFactory

STEPLINE = str(Path(sys.executable).parent / "stepline")

WEATHER = {
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
    async with serve(agent_root, llm=llm.settings(), engine="memory") as app:
        r = await app.client.post("/ask", json={"q": "Weather in Oslo?"})
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "Sunny, 21 degrees."
    assert body["runs"] == [
        ["weather_GetWeather", {"status": 200, "body": {"city": "Oslo", "sky": "sunny", "celsius": 21}}, None]
    ]
    offered = llm.requests[0]["tools"][0]["function"]
    assert offered["name"] == "weather_GetWeather" and offered["description"] == "Today's weather in a city."
