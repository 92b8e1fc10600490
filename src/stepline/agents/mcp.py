"""`mcp_tools(...)`: the tools of an MCP server (a command over stdio, or a URL over streamable HTTP) as
`Tool`s an agent passes to `ctx.llm.run`, on the official `mcp` SDK. The server is started once per process
and its session kept for later calls; `close_sessions()` ends them (Stepline.stop calls it). (The other
way round, the project served as MCP tools, is `stepline mcp`: `stepline.cli.mcp`.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from stepline._errors import McpServerError, ToolArgumentsError
from stepline.agents.tools import Tool

if TYPE_CHECKING:
    from mcp.client.session import ClientSession

    from stepline.core.context import RunContext

log = logging.getLogger("stepline.mcp")


# -- using the tools of MCP servers ------------------------------------------------------------------------


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
    async def invoke(arguments: dict[str, Any], ctx: RunContext) -> Any:
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
