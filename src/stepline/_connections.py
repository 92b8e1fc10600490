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
MAX_CONNECTIONS = 1000  # per process: past it, new requests get 503 (uvicorn's limit_concurrency)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    head_timeout = HEAD_TIMEOUT
    max_head = MAX_HEAD
    drain_timeout = 30.0  # seconds to read and throw away the rest of a body answered before it was read

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True  # reading a request's head (or waiting for the first one)
        self._draining = False  # throwing away the rest of a body answered before it was read
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        reading_head = self._in_head
        super().data_received(data)
        if reading_head and self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(431, "Request Header Fields Too Large", f"the request head is over {self.max_head} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        unread = self.cycle is not None and self.cycle.more_body  # answered before its body was read (a 413)
        super().on_response_complete()
        if unread:
            # uvicorn reads the rest of the body and throws it away, cancelling its keep-alive timer with
            # every byte: a body sent a byte at a time would hold the connection without this deadline.
            # Those bytes are the old request's, not the next one's head (on_message_complete ends this).
            self._draining = True
            self._disarm()
            self._head_timer = self.loop.call_later(self.drain_timeout, self._drain_late)
        else:
            # Between requests uvicorn's keep-alive timeout applies; the head deadline starts with the next byte.
            self._begin_head()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._draining:  # the rest of a refused body is read: what comes next is a new request
            self._draining = False
            self._disarm()
            self._begin_head()

    def _begin_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0

    def _drain_late(self) -> None:
        self._head_timer = None
        if self._draining and not self.transport.is_closing():
            self.transport.close()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        # A head begun, or a connection that never sent one; not an idle keep-alive (uvicorn closes those).
        if self._in_head and not self.transport.is_closing() and (self._head_bytes or self.cycle is None):
            self._refuse(408, "Request Timeout", f"the request head did not arrive within {self.head_timeout:g} s")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._disarm()
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        self.transport.close()
