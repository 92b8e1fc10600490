"""MCP at the edge, both ways, on the official `mcp` SDK.

`stepline mcp` serves the project as MCP tools: the API steps (their path parameters, body and query as
the tool's input, validated as the HTTP route validates them) and the topics (emit to it, validated by
the subscribers' input schema) that `[mcp]` in stepline.toml lists, and nothing else: a connected model
must not reach a step that decides things (approves a refund) unless someone chose to let it. Each call
starts a trace of its own, which `stepline traces` shows like any other.

`mcp_tools(...)` goes the other way: the tools of an MCP server (a command over stdio, or a URL over
streamable HTTP) as `Tool`s an agent passes to `ctx.llm.run`. The server is started once per process
and its session kept for later calls; `close_sessions()` ends them (Stepline.stop calls it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from stepline._errors import Problem, ProjectLoadError, SteplineError
from stepline.agents.tools import Tool, ToolArgumentsError, api_parameters, api_request, topic_data, topic_schema
from stepline.steps.config import ApiConfig, EventConfig
from stepline.steps.request import unpack_result
from stepline.steps.settings import SETTINGS_FILE, McpSettings

if TYPE_CHECKING:
    from mcp.client.session import ClientSession
    from mcp.server.lowlevel import Server
    from mcp_types import CallToolResult

    from stepline.app import Stepline
    from stepline.core.context import Context
    from stepline.core.engine import Engine
    from stepline.steps.project import Step

log = logging.getLogger("stepline.mcp")

HOW_TO_EXPOSE = (
    f'list them under [mcp] in {SETTINGS_FILE}: steps = ["GetWeather"] (API steps by name) and '
    'topics = ["weather.alert"] (topics to emit to); "*" stands for all of either'
)


def topic_tool_name(topic: str) -> str:
    return "emit_" + re.sub(r"[^A-Za-z0-9_-]", "_", topic)


def exposed(engine: Engine, settings: McpSettings) -> tuple[list[Step], list[str], list[Problem]]:
    """The API steps and topics `[mcp]` lists, and a problem for each name that is neither."""
    api = [s for s in engine.project.api_steps if isinstance(s.config, ApiConfig)]
    subscribed = sorted(
        {t for s in engine.project.event_steps if isinstance(s.config, EventConfig) for t in s.config.subscribes}
    )
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

    from stepline import __version__

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
        names = [s.name for s in steps] + [topic_tool_name(t) for t in topics]
        log.info("stepline mcp serves %d tools: %s", len(names), ", ".join(names))
    async with app.lifespan(), stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


# -- using the tools of MCP servers ------------------------------------------------------------------------


class McpServerError(SteplineError):
    """An MCP server given to `mcp_tools` could not be started or reached."""

    def __init__(self, server: str, exc: BaseException) -> None:
        super().__init__(
            f"the MCP server {server} could not be started or reached ({type(exc).__name__}: {exc}); "
            "check the command (or url), and run it by hand to see its own errors"
        )


_SessionKey = tuple[tuple[str, ...] | None, str | None, tuple[tuple[str, str], ...] | None]


class _Session:
    """One live client session to one MCP server, owned by a task of its own.

    The SDK's transports and session are anyio contexts, which must be entered and left in the same task;
    a handler's task ends with its request, so a background task holds them and handlers only send
    requests through the session (which is safe from any task of the loop)."""

    def __init__(self, key: _SessionKey, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.ready: asyncio.Future[ClientSession] = loop.create_future()
        self._stop = asyncio.Event()
        self.task = loop.create_task(self._own(), name=f"stepline-mcp {_describe(key)}")

    async def _own(self) -> None:
        from mcp.client.session import ClientSession

        command, url, env = self.key
        try:
            async with AsyncExitStack() as stack:
                if command is not None:
                    from mcp.client.stdio import StdioServerParameters, stdio_client

                    parameters = StdioServerParameters(
                        command=command[0], args=list(command[1:]), env=dict(env) if env is not None else None
                    )
                    read, write = await stack.enter_async_context(stdio_client(parameters))
                else:
                    from mcp.client.streamable_http import streamable_http_client

                    assert url is not None
                    streams = await stack.enter_async_context(streamable_http_client(url))
                    read, write = streams[0], streams[1]
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self.ready.set_result(session)
                await self._stop.wait()
        except Exception as exc:
            if not self.ready.done():
                self.ready.set_exception(McpServerError(_describe(self.key), exc))
            else:
                log.warning("the MCP server %s stopped: %s: %s", _describe(self.key), type(exc).__name__, exc)
        finally:
            if not self.ready.done():
                self.ready.cancel()
            if _sessions.get(self.key) is self:
                del _sessions[self.key]

    @property
    def alive(self) -> bool:
        return not self.task.done() and not self._stop.is_set() and self.loop is asyncio.get_running_loop()

    async def close(self) -> None:
        if _sessions.get(self.key) is self:
            del _sessions[self.key]
        self._stop.set()
        await asyncio.gather(self.task, return_exceptions=True)


_sessions: dict[_SessionKey, _Session] = {}


async def _session(key: _SessionKey) -> tuple[_Session, ClientSession]:
    entry = _sessions.get(key)
    if entry is None or not entry.alive:
        # No await between the look-up and the insert: handlers that ask at once share one server start.
        entry = _sessions[key] = _Session(key, asyncio.get_running_loop())
    # shield: a handler cancelled while the server starts must not cancel the start for the others.
    return entry, await asyncio.shield(entry.ready)


async def close_sessions() -> None:
    """End every MCP session this process keeps on the running loop (and their server processes)."""
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(s.close() for s in list(_sessions.values()) if s.loop is loop))


@asynccontextmanager
async def mcp_tools(
    command: Sequence[str] | None = None,
    *,
    url: str | None = None,
    env: dict[str, str] | None = None,
    prefix: str = "",
) -> AsyncIterator[list[Tool]]:
    """The tools of an MCP server, for `ctx.llm.run(..., tools=...)`.

    async with mcp_tools(["python", "weather_server.py"]) as tools:
        reply = await ctx.llm.run(question, tools=tools)

    The server is started on the first call and its session kept for the life of the process: a later
    call with the same command (or url) and env reuses it, so starting the server is paid for once. The
    tools are listed afresh on every call. A server that went away is started again on the next call."""
    if (command is None) == (url is None):
        raise ValueError("give the server's command (stdio) or its url (streamable HTTP), not both")
    if command is not None and not command:
        raise ValueError("the command is empty: give the program and its arguments, e.g. ['python', 'server.py']")
    key: _SessionKey = (
        tuple(command) if command is not None else None,
        url,
        tuple(sorted(env.items())) if env is not None else None,
    )
    entry, session = await _session(key)
    try:
        listed = await session.list_tools()
    except Exception as exc:
        if not _connection_lost(exc):
            raise
        await entry.close()  # the server went away since the last call: start it again, once
        entry, session = await _session(key)
        listed = await session.list_tools()
    yield [_remote_tool(entry, session, t, prefix) for t in listed.tools]


def _connection_lost(exc: BaseException) -> bool:
    import anyio
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    if isinstance(exc, MCPError):
        return exc.code == CONNECTION_CLOSED
    return isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream)


def _describe(key: _SessionKey) -> str:
    command, url, _env = key
    return " ".join(command) if command is not None else str(url)


def _remote_tool(entry: _Session, session: Any, remote: Any, prefix: str) -> Tool:
    async def invoke(arguments: dict[str, Any], ctx: Context) -> Any:
        try:
            result = await session.call_tool(remote.name, arguments)
        except Exception as exc:
            if _connection_lost(exc):
                await entry.close()  # the next mcp_tools call starts the server again
                raise ToolArgumentsError(f"the MCP server {_describe(entry.key)} went away: {exc}") from None
            raise
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        if result.is_error:
            raise ToolArgumentsError(text or "the MCP tool failed")
        return result.structured_content if result.structured_content is not None else text

    schema = dict(remote.input_schema or {"type": "object", "properties": {}})
    return Tool(prefix + remote.name, remote.description or remote.name, schema, "mcp", remote.name, invoke)
