"""What uvicorn leaves open on a connection: a deadline for a request's head, and a cap on its size.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`), but a connection that sends nothing
after it opens, or sends its headers a byte at a time, is held for ever; and httptools buffers a head of
any size. Here a request's head (request line and headers) must arrive whole within `head_timeout`
seconds of its first byte (or of the connection opening) and within `max_head` bytes, or the connection
is answered 408 or 431 and closed. The body's own deadline is the app's (`read_body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT = 10.0
MAX_HEAD = 64 * 1024
KEEP_ALIVE = 5  # seconds an idle connection is kept between requests (uvicorn's timeout_keep_alive)
# Per process. Requests in flight past MAX_REQUESTS are answered 503 by the app (HttpApp); stream sockets
# past MAX_STREAM_SOCKETS are refused 503 before the upgrade (http/streams.py). uvicorn's own cap
# (limit_concurrency) counts both, open WebSockets among its connections and tasks, so it is only the
# backstop above the two: with it at 1,000, a thousand watchers made every request a 503.
MAX_REQUESTS = 1000
MAX_STREAM_SOCKETS = 10_000
MAX_CONNECTIONS = MAX_REQUESTS + MAX_STREAM_SOCKETS + 100


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    head_timeout = HEAD_TIMEOUT
    max_head = MAX_HEAD
    drain_timeout = 30.0  # seconds to read and throw away the rest of a body answered before it was read

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True  # reading a request's head (or waiting for the first one)
        # The loop time by which the head (or the rest of a refused body) must be in. A deadline, not a timer
        # per request: one sweep a server checks them all (a timer armed and cancelled per request, and two
        # more overridden callbacks, cost the API path about 5% of its requests per second).
        self._deadline: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.time() + self.head_timeout  # a connection that never sends is held no longer
        _watch(self)

    def data_received(self, data: bytes) -> None:
        reading_head = self._in_head
        super().data_received(data)
        if reading_head and self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(431, "Request Header Fields Too Large", f"the request head is over {self.max_head} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A new request: its head must be in by the deadline (whatever came before: a refused body's rest).
        self._in_head = True
        self._head_bytes = 0
        self._deadline = self.loop.time() + self.head_timeout

    def on_headers_complete(self) -> None:
        self._in_head = False
        # From here the app keeps the body's own deadline; this one is for the rest of a body the app answered
        # before reading it (a 413): uvicorn reads and throws it away, cancelling its keep-alive timer with
        # every byte, so a body sent a byte at a time would hold the connection without it.
        self._deadline = self.loop.time() + self.drain_timeout
        super().on_headers_complete()

    def late(self, now: float) -> None:
        """Close the connection if its deadline passed (the sweep asks)."""
        if self._deadline is None or now < self._deadline or self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(408, "Request Timeout", f"the request head did not arrive within {self.head_timeout:g} s")
        elif self.cycle is not None and self.cycle.response_complete and self.cycle.more_body:
            self._deadline = None
            self.transport.close()  # answered, and the rest of its body still trickling in
        # else: the app is at work on it (and keeps the body's deadline itself), or it is idle between
        # requests (uvicorn's keep-alive timeout closes it)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._deadline = None
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        self.transport.close()


_SWEEPING = "_stepline_sweeping"  # set on uvicorn's ServerState while its connections are swept


def _watch(protocol: GuardedHttpToolsProtocol) -> None:
    """Make sure the connections of this protocol's server are swept while it has any."""
    state = protocol.server_state
    if not getattr(state, _SWEEPING, False):
        setattr(state, _SWEEPING, True)
        _schedule(protocol.loop, state, protocol.head_timeout)


def _schedule(loop: asyncio.AbstractEventLoop, state: Any, head_timeout: float) -> None:
    loop.call_later(min(0.5, head_timeout / 4), _sweep, loop, state, head_timeout)


def _sweep(loop: asyncio.AbstractEventLoop, state: Any, head_timeout: float) -> None:
    now = loop.time()
    connections = [c for c in state.connections if isinstance(c, GuardedHttpToolsProtocol)]
    for connection in connections:
        connection.late(now)
    if connections:
        _schedule(loop, state, head_timeout)
    else:
        setattr(state, _SWEEPING, False)  # the next connection starts it again
