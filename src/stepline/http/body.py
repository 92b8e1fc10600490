"""Reading a request's body within limits, for API steps and Stepline's own routes alike."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from stepline._errors import HttpError

# A declared body up to this size is read and thrown away after a 413 (uvicorn does that on a kept-alive
# connection), so the client, still sending, reads the answer; past it the connection is closed.
_DRAIN = 16 * 1024 * 1024


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with HttpError past `limit` bytes (413) or when it takes longer than `timeout`
    seconds to arrive (408). A declared Content-Length past the limit is refused before reading."""
    headers = request.headers
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        declared = int(length)
        if declared > limit:
            raise HttpError(413, _too_large(limit), {"connection": "close"} if declared > _DRAIN else {})
        if declared == 0:
            return b""  # the usual GET, and a POST with no body: nothing to read, no deadline to keep
    elif length is None and "transfer-encoding" not in headers:
        return b""
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":  # nobody to answer: the answer goes nowhere
                    raise HttpError(400, "the client went away before its body arrived")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, _too_large(limit), {"connection": "close"})
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise HttpError(408, f"the body did not arrive within {timeout:g} s", {"connection": "close"}) from None
    return b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"the body is larger than {limit:,} bytes (raise the limit with --max-body or Stepline(max_body=...))"
