"""Streams over the wire: Motia's WebSocket protocol on the app's own port, SSE, and the JavaScript client.

WebSocket, at `/` (where Motia's clients connect) and at `/__stepline/streams`:

    -> {"type": "join", "data": {"streamName", "groupId", "id"?, "subscriptionId", "since"?}}
    -> {"type": "leave", "data": {"streamName", "groupId", "id"?, "subscriptionId"}}
    <- {"timestamp", "streamName", "groupId", "id"?, "event": {"type": "sync"|"create"|"update"|"delete", "data"},
        "seq"}
    <- {"timestamp", "streamName", "groupId", "id"?, "event": {"type": "event", "event": {"type", "data"}}}

A token comes as `?authToken=` or as the subprotocols `["Authorization", token]` (the app then answers
with the subprotocol "Authorization", which browsers insist on); the project's authenticate hook turns
it into the `auth` that access checks see, or refuses the connection (HTTP 401, before the upgrade).

SSE, for clients without WebSocket: `GET /__stepline/streams/{stream}/{group}[/{id}]`, each message as an
SSE event named by its type, with `id: <seq>`; a reconnecting EventSource sends Last-Event-ID, and gets
what it missed. The JavaScript client is served at `/__stepline/streams/client.js`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from stepline import _json
from stepline._errors import SchemaValidationError, SteplineError
from stepline.core.streams import (
    SLOW_CODE,
    SLOW_REASON,
    Hub,
    Out,
    Outbox,
    SlowConsumer,
    StreamAccessError,
)
from stepline.http.admin import json_response
from stepline.http.connections import MAX_STREAM_SOCKETS
from stepline.steps.streams import Subscription

log = logging.getLogger("stepline.streams")

SOCKET_PATHS = ("/", "/__stepline/streams")
UNAUTHORIZED = "STREAM_UNAUTHORIZED"
BAD_REQUEST = "STREAM_BAD_REQUEST"
UNAVAILABLE = "STREAM_UNAVAILABLE"
_SSE_PING = 15.0  # seconds between SSE comments, so that proxies keep an idle stream open
_SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx: pass events on as they come
    "access-control-allow-origin": "*",  # a page elsewhere may watch; the token, not the origin, decides
}


@dataclass
class StreamAuthRequest:
    """What the authenticate hook sees of a connecting client."""

    headers: dict[str, str]
    url: str
    query: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # ?authToken=, the Authorization subprotocol, or an Authorization: Bearer header


# Returns what access checks get as `auth` (None: anonymous), may be async; raises to refuse the client.
Authenticate = Callable[[StreamAuthRequest], Any]


class StreamAuthError(SteplineError):
    """Raise in an authenticate hook to refuse a client with this reason (any other exception refuses too)."""


class StreamEndpoints:
    def __init__(self, hub: Callable[[], Hub | None], authenticate: Callable[[], Authenticate | None]) -> None:
        self._hub = hub
        self._authenticate = authenticate
        self.max_sockets = MAX_STREAM_SOCKETS
        self.sockets = 0  # open stream connections (WebSocket and SSE)

    def hub(self) -> Hub | None:
        return self._hub()

    # -- authentication ----------------------------------------------------------------------------

    async def _auth(self, scope: Scope, extra_token: str | None) -> Any:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.get("authToken") or extra_token
        bearer = headers.get("authorization", "")
        if token is None and bearer.lower().startswith("bearer "):
            token = bearer[7:].strip()
        path = scope.get("path", "/")
        url = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        hook = self._authenticate()
        if hook is None:
            return None
        result = hook(StreamAuthRequest(headers, url, query, token))
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- WebSocket ---------------------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        hub = self._hub()
        offered = list(scope.get("subprotocols", []))
        token = None
        if "Authorization" in offered:
            at = offered.index("Authorization")
            token = offered[at + 1] if at + 1 < len(offered) else None
        if hub is None:
            await self._refuse(ws, 503, UNAVAILABLE, "this app's store keeps no streams")
            return
        if self.sockets >= self.max_sockets:
            await self._refuse(ws, 503, UNAVAILABLE, f"this process has {self.max_sockets:,} stream connections open")
            return
        try:
            auth = await self._auth(scope, token)
        except Exception as exc:
            await self._refuse(ws, 401, UNAUTHORIZED, _refusal(exc))
            return
        await ws.accept(subprotocol="Authorization" if "Authorization" in offered else None)
        self.sockets += 1
        outbox = Outbox()
        eager = _EagerSend(send)
        outbox.direct = eager.try_now
        sender = asyncio.create_task(self._send_loop(ws, eager, outbox), name="stepline-stream-send")
        try:
            while not outbox.overflowed:
                try:
                    text = await ws.receive_text()
                except (WebSocketDisconnect, KeyError, RuntimeError):
                    break  # gone (KeyError: a binary frame, which this protocol has none of)
                await self._on_message(hub, outbox, auth, text)
        finally:
            self.sockets -= 1
            hub.drop(outbox)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _refuse(self, ws: WebSocket, status: int, code: str, reason: str) -> None:
        """Refuse before the upgrade: an HTTP response where the server can send one, else a close."""
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(json_response({"error": reason, "code": code}, status))
        else:
            await ws.close(code=1008, reason=f"{code}: {reason}"[:120])

    async def _send_loop(self, ws: WebSocket, eager: _EagerSend, outbox: Outbox) -> None:
        # Straight to the server's ASGI `send`, not through Starlette's WebSocket.send_text: the same message,
        # and on a fan-out to a thousand connections the wrapper's checks cost a tenth of the time.
        try:
            while True:
                await outbox.ready()
                await eager.settled()  # a message sent at once may still be finishing: it goes first
                eager.sending = True
                try:
                    while (out := outbox.pop()) is not None:
                        await eager.send({"type": "websocket.send", "text": out.text})
                finally:
                    eager.sending = False
                if outbox.closed:
                    return
        except SlowConsumer:
            log.warning("closing a stream connection that reads too slowly (%s)", SLOW_REASON)
            with contextlib.suppress(Exception):
                await ws.close(code=SLOW_CODE, reason=SLOW_REASON)
        except Exception:
            pass  # the connection is gone; the receive loop ends with it

    async def _on_message(self, hub: Hub, outbox: Outbox, auth: Any, text: str) -> None:
        try:
            message = _json.parse(text.encode(), "a stream message")
        except SchemaValidationError:
            outbox.push(_error({}, BAD_REQUEST, 'a message is JSON: {"type": "join", "data": {...}}'))
            return
        kind = message.get("type") if isinstance(message, dict) else None
        data = message.get("data") if isinstance(message, dict) else None
        if kind not in ("join", "leave") or not isinstance(data, dict):
            outbox.push(_error({}, BAD_REQUEST, 'a message is {"type": "join" or "leave", "data": {...}}'))
            return
        problem = _invalid(data)
        if problem is not None:
            outbox.push(_error(data, BAD_REQUEST, problem))
            return
        sub_id = str(data.get("subscriptionId") or "")
        if kind == "leave":
            hub.leave(outbox, sub_id)
            return
        subscription = Subscription(data["streamName"], data["groupId"], data.get("id") or None)
        since = data.get("since")
        try:
            await hub.check_access(subscription, auth)
            await hub.join(outbox, sub_id, subscription, since if isinstance(since, int) else None)
        except StreamAccessError as exc:
            outbox.push(_error(data, exc.code, exc.reason))
        except Exception as exc:
            log.warning("a join of %s failed: %s", data.get("streamName"), exc)
            outbox.push(_error(data, UNAVAILABLE, "the stream cannot be read now; join again"))

    # -- SSE ---------------------------------------------------------------------------------------

    async def sse(self, request: Request) -> Response:
        hub = self._hub()
        if hub is None:
            return json_response({"error": "this app's store keeps no streams", "code": UNAVAILABLE}, 503)
        if self.sockets >= self.max_sockets:
            reason = f"this process has {self.max_sockets:,} stream connections open"
            return json_response({"error": reason, "code": UNAVAILABLE}, 503, {"retry-after": "1"})
        try:
            auth = await self._auth(request.scope, None)
        except Exception as exc:
            return json_response({"error": _refusal(exc), "code": UNAUTHORIZED}, 401, {"www-authenticate": "Bearer"})
        params = request.path_params
        subscription = Subscription(params["stream"], params["group"], params.get("id"))
        raw_since = request.headers.get("last-event-id") or request.query_params.get("since")
        since = int(raw_since) if raw_since and raw_since.isdigit() else None
        try:
            await hub.check_access(subscription, auth)
        except StreamAccessError as exc:
            status = 404 if exc.code != "STREAM_ACCESS_DENIED" else 403
            return json_response({"error": exc.reason, "code": exc.code}, status)
        outbox = Outbox()
        try:
            await hub.join(outbox, "sse", subscription, since)
        except Exception as exc:
            hub.drop(outbox)
            log.warning("an SSE join of %s failed: %s", subscription.stream, exc)
            return json_response({"error": "the stream cannot be read now", "code": UNAVAILABLE}, 503)
        return StreamingResponse(self._sse_events(hub, outbox), media_type="text/event-stream", headers=_SSE_HEADERS)

    async def _sse_events(self, hub: Hub, outbox: Outbox) -> AsyncIterator[str]:
        self.sockets += 1
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    out = await asyncio.wait_for(outbox.get(), _SSE_PING)
                except TimeoutError:
                    yield ": ping\n\n"
                    continue
                except SlowConsumer:
                    closed = _json.dumps({"code": SLOW_CODE, "reason": SLOW_REASON}).decode()
                    yield f"event: close\ndata: {closed}\n\n"
                    return  # the EventSource reconnects, with Last-Event-ID
                head = f"id: {out.seq}\n" if out.seq is not None else ""
                yield f"{head}event: {out.type}\ndata: {out.text}\n\n"
        finally:
            self.sockets -= 1
            hub.drop(outbox)

    async def client_js(self, request: Request) -> Response:
        source = resources.files("stepline.http").joinpath("stream_client.js").read_bytes()
        return Response(source, headers={"content-type": "text/javascript; charset=utf-8", "cache-control": "no-cache"})


class _EagerSend:
    """Sends a stream message from the code that made it, with no task switch, when it can.

    A change fanned out to a thousand connections woke a thousand sender tasks, one per message: the
    event loop's scheduling took two fifths of the time (bench/streams.py, profiled). The server's ASGI
    `send` finishes without waiting whenever the connection's buffer has room, so it is stepped here by
    hand: done in one step, the message is out; should it wait for room, the rest of it runs as a task of
    its own, which the sender waits for before the next message, so the order holds."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.sending = False  # the sender task is draining the outbox
        self._pending: asyncio.Future[None] | None = None
        self.gone = False

    def try_now(self, out: Out) -> bool:
        if self.sending or self.gone or (self._pending is not None and not self._pending.done()):
            return False  # something goes before it: the outbox keeps it, in order
        step = self.send({"type": "websocket.send", "text": out.text})
        if not isinstance(step, Coroutine):  # a server whose send is some other awaitable: awaited as usual
            self._pending = asyncio.ensure_future(step)
            return True
        try:
            waiting_on = step.send(None)
        except StopIteration:
            return True
        except Exception:
            self.gone = True  # the connection is gone; the receive loop ends with it
            return True
        self._pending = asyncio.ensure_future(_finish(step, waiting_on))
        return True

    async def settled(self) -> None:
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
            self._pending = None


async def _finish(step: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Run the rest of a coroutine that `try_now` stepped once, as the event loop would have."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)  # a bare yield: give the loop one turn
            else:
                # What a Task does with a future its coroutine yields: the future marked itself as being
                # awaited when it was yielded, and refuses a second await until that mark is taken off.
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:
            try:
                waiting_on = step.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = step.send(None)
        except StopIteration:
            return


def _refusal(exc: Exception) -> str:
    """What a refused client is told: the hook's own reason, or (a bug in the hook) that it failed, which the
    log says more of, for the project's developer and not for the client."""
    if isinstance(exc, StreamAuthError):
        return str(exc)
    log.error("the streams authenticate hook raised %s: %s", type(exc).__name__, exc, exc_info=exc)
    return "authentication failed"


def _invalid(data: dict[str, Any]) -> str | None:
    for key in ("streamName", "groupId"):
        if not isinstance(data.get(key), str) or not data.get(key):
            return f"{key} is a non-empty string"
    if data.get("id") is not None and not isinstance(data.get("id"), str):
        return "id is a string (or absent, to watch the whole group)"
    if not isinstance(data.get("subscriptionId"), str) or not data.get("subscriptionId"):
        return "subscriptionId is a non-empty string (the client's name for this watch, to leave it by)"
    since = data.get("since")
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        return "since is the last seq the client saw, a whole number"
    return None


def _error(data: dict[str, Any], code: str, reason: str) -> Out:
    """Motia's error message: an event of type "error" on the subscription, not a close."""
    body: dict[str, Any] = {
        "timestamp": int(time.time() * 1000),
        "streamName": data.get("streamName"),
        "groupId": data.get("groupId"),
    }
    if data.get("id"):
        body["id"] = data["id"]
    body["event"] = {"type": "event", "event": {"type": "error", "data": {"code": code, "message": reason}}}
    return Out(_json.dumps(body).decode(), None, "error")
