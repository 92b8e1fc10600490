"""`stepline mcp`: the project served as MCP tools over stdio, on the official `mcp` SDK.

The API steps (their path parameters, body and query as the tool's input, validated as the HTTP route
validates them) and the topics (emit to it, validated by the subscribers' input schema) that `[mcp]` in
stepline.toml lists, and nothing else: a connected model must not reach a step that decides things
(approves a refund) unless someone chose to let it. Each call starts a trace of its own, which
`stepline traces` shows like any other. (The other way round, an agent using an MCP server's tools, is
`stepline.agents.mcp`.)
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from stepline._errors import Problem, ProjectLoadError, ToolArgumentsError
from stepline.agents.tools import api_parameters, api_request, emit_tool_name, topic_data, topic_schema
from stepline.steps.config import ApiConfig, EventConfig
from stepline.steps.request import unpack_result
from stepline.steps.settings import SETTINGS_FILE, McpSettings

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from mcp_types import CallToolResult

    from stepline.app import Stepline
    from stepline.core.engine import Engine
    from stepline.steps.project import Step

log = logging.getLogger("stepline.mcp")

HOW_TO_EXPOSE = (
    f'list them under [mcp] in {SETTINGS_FILE}: steps = ["GetWeather"] (API steps by name) and '
    'topics = ["weather.alert"] (topics to emit to); "*" stands for all of either'
)


def exposed(engine: Engine, settings: McpSettings) -> tuple[list[Step[ApiConfig]], list[str], list[Problem]]:
    """The API steps and topics `[mcp]` lists, and a problem for each name that is neither."""
    api = engine.project.api_steps
    subscribed = sorted({t for s in engine.project.event_steps for t in s.config.subscribes})
    problems: list[Problem] = []
    if "*" in settings.steps:
        steps = api
    else:
        by_name = {s.name: s for s in api}
        steps = [by_name[n] for n in settings.steps if n in by_name]
        for name in settings.steps:
            if name in by_name:
                continue
            other = engine.project.steps.get(name)
            why = f"{name!r} is a {other.type} step: only API steps are served" if other else f"no step {name!r}"
            fix = "an API step's name" + (f" (API steps: {', '.join(by_name)})" if by_name else "; there are none")
            if other is not None and isinstance(other.config, EventConfig) and other.config.subscribes:
                fix += f"; or list its topic under topics: {', '.join(other.config.subscribes)}"
            problems.append(Problem(SETTINGS_FILE, "mcp.steps", why, fix))
    if "*" in settings.topics:
        topics = subscribed
    else:
        topics = [t for t in settings.topics if t in subscribed]
        for topic in settings.topics:
            if topic not in subscribed:
                fix = f"a topic that a step subscribes to ({', '.join(subscribed) or 'there are none'})"
                problems.append(Problem(SETTINGS_FILE, "mcp.topics", f"no step subscribes to {topic!r}", fix))
    return steps, topics, problems


def build_server(app: Stepline) -> Server[Any]:
    """An MCP server whose tools are the API steps and topics `[mcp]` lists (read afresh on every list).

    Raises ProjectLoadError when `[mcp]` names a step or a topic the project does not have."""
    import mcp_types as types
    from mcp.server.lowlevel import Server

    from stepline._version import __version__

    engine = app.engine
    settings = app.settings.mcp
    _steps, _topics, problems = exposed(engine, settings)
    if problems:
        raise ProjectLoadError(app.root, problems)

    def catalogue() -> dict[str, tuple[str, str, dict[str, Any]]]:
        tools: dict[str, tuple[str, str, dict[str, Any]]] = {}
        steps, topics, _ = exposed(engine, settings)  # the project may have been reloaded since
        for step in steps:
            config = step.config
            if isinstance(config, ApiConfig):
                about = config.description or f"{config.method} {config.path}"
                tools[step.name] = (f"step:{step.name}", about, api_parameters(config))
        for topic in topics:
            schema = topic_schema(engine, topic)
            names = ", ".join(s.name for s in engine.project.subscribers(topic))
            parameters = schema.json_schema() if schema is not None else {"type": "object"}
            tools[emit_tool_name(topic)] = (f"topic:{topic}", f"Emit to {topic!r} (handled by {names}).", parameters)
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
                step = engine.project.steps[target].of(ApiConfig)
                if step is None:  # reloaded meanwhile as another kind of step
                    return _result({"error": f"{target!r} is no longer an API step"}, error=True)
                request = api_request(step.config, arguments)
                status, body, _ = unpack_result(await engine.call_api(step, request))
                return _result({"status": status, "body": body}, error=status >= 400)
            event = await engine.emit_external(target, topic_data(engine, target, arguments))
            return _result({"emitted": target, "traceId": event.trace_id})
        except ToolArgumentsError as exc:
            return _result({"error": str(exc)}, error=True)
        except Exception as exc:  # the handler failed: the caller gets why, the trace has the rest
            return _result({"error": f"{type(exc).__name__}: {exc}"}, error=True)

    if settings.exposes_nothing:
        # An MCP client shows these to its user (or its model): say why the list is empty and what to do.
        instructions = (
            f"This Stepline project serves no tools yet: none is listed for MCP. To serve some, {HOW_TO_EXPOSE}."
        )
    else:
        instructions = (
            f"The API steps and event topics of a Stepline project that its {SETTINGS_FILE} lists under [mcp]."
        )
    return Server(
        "stepline",
        version=__version__,
        instructions=instructions,
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

    from stepline.cli.console import print_problems

    try:
        server = build_server(app)
    except ProjectLoadError as exc:
        print_problems(exc.problems, f"[bold red]stepline mcp cannot serve the project at {exc.root}:[/]")
        raise SystemExit(1) from None
    steps, topics, _ = exposed(app.engine, app.settings.mcp)
    if not steps and not topics:  # stderr: stdout carries the protocol
        log.warning("stepline mcp serves no tools: nothing is listed for MCP. To serve some, %s.", HOW_TO_EXPOSE)
    else:
        names = [s.name for s in steps] + [emit_tool_name(t) for t in topics]
        log.info("stepline mcp serves %d tools: %s", len(names), ", ".join(names))
    async with app.lifespan(), stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
