"""Serving the ASGI app with uvicorn: the listening socket, and uvicorn's settings for it."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from stepline.http.connections import KEEP_ALIVE, MAX_CONNECTIONS, GuardedHttpToolsProtocol


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}. Pick another with --port.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server_config(asgi: Any, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for a Stepline app: bounded connections (see stepline.http.connections), quiet logs."""
    return uvicorn.Config(
        asgi,
        lifespan="on",
        log_level="warning",
        access_log=False,
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=KEEP_ALIVE,
        limit_concurrency=MAX_CONNECTIONS,
        # No permessage-deflate for stream sockets: each connection has its own compression context, so a
        # change fanned out to a thousand watchers would be compressed a thousand times, and decompressed
        # as often by the clients: measured in bench/streams.py, it halved the messages per second.
        ws_per_message_deflate=False,
        **options,
    )
