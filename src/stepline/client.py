"""A Python client for Stepline's streams (and Motia's: the same protocol), for services and scripts.

    from stepline.client import StreamClient

    async with StreamClient("ws://127.0.0.1:3000", token="...") as client:
        report = await client.item("progress", "reports", "r-1")   # returns once the snapshot is in
        print(report.state)                                         # the item now (None if there is none)
        async for message in report:                                # every change and event after it
            print(message.type, report.state)

A dropped connection is opened again by itself, and every watch joins again with the last number it saw:
the server sends what was missed (or a fresh snapshot, when its log no longer reaches back), so `state`
stays right across reconnects. docs/streams.md has the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stepline._errors import SteplineError

log = logging.getLogger("stepline.client")

__all__ = ["Message", "StreamClient", "StreamRefusedError", "Watch"]


class StreamRefusedError(SteplineError):
    """The server refused the connection (STREAM_UNAUTHORIZED) or a watch (STREAM_ACCESS_DENIED,
    STREAM_NOT_FOUND, STREAM_BAD_REQUEST): `code` says which, `reason` why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One message of a watch: a sync, a create/update/delete, or an ephemeral event (`type` "event",
    with `event` its own type and `data` its data)."""

    type: str
    data: Any
    id: str | None = None
    seq: int | None = None
    event: str | None = None
    timestamp: int = 0


_ids = itertools.count(1)


class Watch:
    """One group (`state`: a list of items) or one item (`state`: the item or None), kept current."""

    def __init__(self, client: StreamClient, stream: str, group: str, id: str | None) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.id = id
        self.subscription_id = f"py-{next(_ids)}-{id_suffix()}"
        self.state: Any = None if id is not None else []
        self.seq: int | None = None  # the group's number `state` is as of
        self.synced = asyncio.Event()
        self.error: StreamRefusedError | None = None
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()

    def _join(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "streamName": self.stream,
            "groupId": self.group,
            "subscriptionId": self.subscription_id,
        }
        if self.id is not None:
            data["id"] = self.id
        if self.seq is not None:
            data["since"] = self.seq
        return {"type": "join", "data": data}

    def _apply(self, raw: dict[str, Any]) -> None:
        event = raw.get("event") or {}
        kind = event.get("type")
        if kind == "event":
            inner = event.get("event") or {}
            if inner.get("type") == "error" and not self.synced.is_set():
                refusal = inner.get("data") or {}
                code, reason = str(refusal.get("code", "STREAM_ERROR")), str(refusal.get("message", ""))
                self.error = StreamRefusedError(code, reason)
                self.synced.set()
                return
            self._queue.put_nowait(
                Message("event", inner.get("data"), raw.get("id"), None, inner.get("type"), raw.get("timestamp", 0))
            )
            return
        seq = raw.get("seq")
        if kind != "sync" and seq is not None and self.seq is not None and seq <= self.seq:
            return  # already applied
        data: Any = event.get("data")
        first = not self.synced.is_set()
        if kind == "sync":
            self.state = data if data is not None or self.id is not None else []
        elif self.id is not None:
            self.state = None if kind == "delete" else data
        elif kind == "delete":
            self.state = [item for item in self.state if item.get("id") != (data or {}).get("id")]
        else:
            ids = [item.get("id") for item in self.state]
            if data.get("id") in ids:
                self.state = [data if item.get("id") == data.get("id") else item for item in self.state]
            else:
                self.state = [*self.state, data]
        if seq is not None:
            self.seq = seq
        self.synced.set()
        if first and kind == "sync":
            return  # the snapshot the watch starts from: `state`, not a message
        self._queue.put_nowait(Message(str(kind), data, raw.get("id"), seq, None, raw.get("timestamp", 0)))

    async def next(self, timeout: float | None = None) -> Message:
        """The next message (TimeoutError after `timeout` seconds; StopAsyncIteration once left)."""
        async with asyncio.timeout(timeout):
            message = await self._queue.get()
        if message is None:
            raise StopAsyncIteration
        return message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        return await self.next()

    async def leave(self) -> None:
        await self.client._leave(self)
        self._queue.put_nowait(None)


def id_suffix() -> str:
    return secrets.token_hex(4)


class StreamClient:
    """A connection to a Stepline (or Motia) app's streams, reopened by itself when it drops."""

    def __init__(self, url: str, *, token: str | None = None, reconnect_delay: float = 1.0) -> None:
        if url.startswith("http"):
            url = "ws" + url[4:]
        self.url = url
        self.token = token
        self.reconnect_delay = reconnect_delay
        self._watches: dict[str, Watch] = {}
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._refused: StreamRefusedError | None = None
        self.connections = 0  # how many times it has connected (1 + reconnects)

    async def __aenter__(self) -> StreamClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the connection (StreamRefusedError if the server refuses it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stepline-stream-client")
        async with asyncio.timeout(timeout):
            await self._connected.wait()
        if self._refused is not None:
            raise self._refused

    async def group(self, stream: str, group: str, timeout: float = 10.0) -> Watch:
        """Watch a group; returns once its snapshot has arrived (StreamRefusedError if refused)."""
        return await self._watch(Watch(self, stream, group, None), timeout)

    async def item(self, stream: str, group: str, id: str, timeout: float = 10.0) -> Watch:
        """Watch one item; returns once its snapshot has arrived (StreamRefusedError if refused)."""
        return await self._watch(Watch(self, stream, group, id), timeout)

    async def _watch(self, watch: Watch, timeout: float) -> Watch:
        await self.connect()
        self._watches[watch.subscription_id] = watch
        await self._send(watch._join())
        async with asyncio.timeout(timeout):
            await watch.synced.wait()
        if watch.error is not None:
            self._watches.pop(watch.subscription_id, None)
            raise watch.error
        return watch

    async def _leave(self, watch: Watch) -> None:
        if self._watches.pop(watch.subscription_id, None) is not None:
            data = watch._join()["data"]
            data.pop("since", None)
            await self._send({"type": "leave", "data": data})

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(message))
        # (not connected: the watch joins when the connection is back)

    async def _run(self) -> None:
        subprotocols = ["Authorization", self.token] if self.token else None
        while True:
            try:
                async with connect(self.url, subprotocols=subprotocols, max_size=None) as ws:  # type: ignore[arg-type]
                    self._ws = ws
                    self.connections += 1
                    self._connected.set()
                    for watch in list(self._watches.values()):
                        await ws.send(json.dumps(watch._join()))
                    async for text in ws:
                        self._dispatch(json.loads(text))
            except InvalidStatus as exc:
                body = exc.response.body or b""
                try:
                    detail = json.loads(body)
                except ValueError:
                    detail = {}
                code = detail.get("code", "STREAM_UNAUTHORIZED" if exc.response.status_code == 401 else "")
                self._refused = StreamRefusedError(code or f"HTTP {exc.response.status_code}", detail.get("error", ""))
                self._connected.set()
                return
            except (OSError, ConnectionClosed, websockets.InvalidHandshake, TimeoutError) as exc:
                log.debug("stream connection lost (%s); reconnecting", exc)
            finally:
                self._ws = None
            await asyncio.sleep(self.reconnect_delay)

    def _dispatch(self, raw: dict[str, Any]) -> None:
        for watch in self._watches.values():
            if watch.stream != raw.get("streamName") or watch.group != raw.get("groupId"):
                continue
            if watch.id is not None and raw.get("id") != watch.id:
                continue
            if watch.id is None and raw.get("id") is not None and (raw.get("event") or {}).get("type") == "sync":
                continue  # an item's snapshot, for a watch of that item
            watch._apply(raw)

    async def drop_connection(self) -> None:
        """Close the connection as a network failure would (it is opened again): for tests of reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for watch in self._watches.values():
            watch._queue.put_nowait(None)
        self._watches.clear()
