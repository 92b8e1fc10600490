"""MCP at the edge, both ways, on the official `mcp` SDK.

`stepline mcp` serves the project as MCP tools: every API step (its path parameters, body and query as
the tool's input, validated as the HTTP route validates them) and every topic that has subscribers
(emit to it, validated by the subscribers' input schema). Each call starts a trace of its own, which
`stepline traces` shows like any other.

`mcp_tools(...)` goes the other way: the tools of an MCP server (a command over stdio, or a URL over
streamable HTTP) as `Tool`s an agent passes to `ctx.llm.run`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._config import ApiConfig, EventConfig
from ._request import unpack_result
from ._tools import Tool, ToolArgumentsError, api_parameters, api_request, topic_data, topic_schema

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from mcp_types import CallToolResult

    from ._app import Stepline
    from ._context import Context


def topic_tool_name(topic: str) -> str:
    return "emit_" + re.sub(r"[^A-Za-z0-9_-]", "_", topic)


def build_server(app: Stepline) -> Server[Any]:
    """An MCP server whose tools are the project's API steps and topics (read afresh on every list)."""
    import mcp_types as types
    from mcp.server.lowlevel import Server

    from . import __version__

    engine = app.engine

    def catalogue() -> dict[str, tuple[str, str, dict[str, Any]]]:
        tools: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for step in engine.project.api_steps:
            config = step.config
            if isinstance(config, ApiConfig):
                about = config.description or f"{config.method} {config.path}"
                tools[step.name] = (f"step:{step.name}", about, api_parameters(config))
        topics = {
            t for s in engine.project.event_steps if isinstance(s.config, EventConfig) for t in s.config.subscribes
        }
        for topic in sorted(topics):
            schema = topic_schema(engine, topic)
            names = ", ".join(s.name for s in engine.project.subscribers(topic))
            parameters = schema.json_schema() if schema is not None else {"type": "object"}
            tools[topic_tool_name(topic)] = (f"topic:{topic}", f"Emit to {topic!r} (handled by {names}).", parameters)
        return tools

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=name, description=about, input_schema=schema)
                for name, (_target, about, schema) in catalogue().items()
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        found = catalogue().get(params.name)
        if found is None:
            return _result({"error": f"no tool {params.name!r}"}, error=True)
        kind, _, target = found[0].partition(":")
        arguments = dict(params.arguments or {})
        try:
            if kind == "step":
                step = engine.project.steps[target]
                assert isinstance(step.config, ApiConfig)
                request = api_request(step.config, arguments)
                status, body, _ = unpack_result(await engine.call_api(step, request))
                return _result({"status": status, "body": body}, error=status >= 400)
            event = await engine.emit_external(target, topic_data(engine, target, arguments))
            return _result({"emitted": target, "traceId": event.trace_id})
        except ToolArgumentsError as exc:
            return _result({"error": str(exc)}, error=True)
        except Exception as exc:  # the handler failed: the caller gets why, the trace has the rest
            return _result({"error": f"{type(exc).__name__}: {exc}"}, error=True)

    return Server(
        "stepline",
        version=__version__,
        instructions="The API steps and event topics of a Stepline project.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _result(value: Any, error: bool = False) -> CallToolResult:
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(value, default=str))],
        structured_content=value if isinstance(value, dict) else None,
        is_error=error,
    )


async def serve_stdio(app: Stepline) -> None:
    """Serve MCP over stdin/stdout until the client hangs up, with the engine running beside it."""
    from mcp.server.stdio import stdio_server

    server = build_server(app)
    async with app.lifespan(), stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


@asynccontextmanager
async def mcp_tools(
    command: Sequence[str] | None = None,
    *,
    url: str | None = None,
    env: dict[str, str] | None = None,
    prefix: str = "",
) -> AsyncIterator[list[Tool]]:
    """The tools of an MCP server, for `ctx.llm.run(..., tools=...)`, while the block runs.

    async with mcp_tools(["python", "weather_server.py"]) as tools:
        reply = await ctx.llm.run(question, tools=tools)
    """
    from mcp.client.session import ClientSession

    if (command is None) == (url is None):
        raise ValueError("give the server's command (stdio) or its url (streamable HTTP), not both")
    async with AsyncExitStack() as stack:
        if command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            parameters = StdioServerParameters(command=command[0], args=list(command[1:]), env=env)
            read, write = await stack.enter_async_context(stdio_client(parameters))
        else:
            from mcp.client.streamable_http import streamable_http_client

            streams = await stack.enter_async_context(streamable_http_client(url))  # type: ignore[arg-type]
            read, write = streams[0], streams[1]
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        listed = await session.list_tools()
        yield [_remote_tool(session, t, prefix) for t in listed.tools]


def _remote_tool(session: Any, remote: Any, prefix: str) -> Tool:
    async def invoke(arguments: dict[str, Any], ctx: Context) -> Any:
        result = await session.call_tool(remote.name, arguments)
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        if result.is_error:
            raise ToolArgumentsError(text or "the MCP tool failed")
        return result.structured_content if result.structured_content is not None else text

    schema = dict(remote.input_schema or {"type": "object", "properties": {}})
    return Tool(prefix + remote.name, remote.description or remote.name, schema, "mcp", remote.name, invoke)
