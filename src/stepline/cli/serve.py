"""Serving a Stepline app: uvicorn on a socket we bind, in the same loop as the engine and the cron scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import sys

import uvicorn
from rich.markup import escape
from watchfiles import PythonFilter, awatch

from stepline._errors import StoreError, StoreUnavailableError
from stepline.app import Stepline
from stepline.cli.console import console, print_problems
from stepline.http.server import bind, server_config


async def serve(
    app: Stepline,
    host: str,
    port: int,
    *,
    reload: bool,
    fd: int | None = None,
    grace: float = 30.0,
    banner: bool = True,
) -> None:
    """Serve until SIGINT or SIGTERM, then drain: the engine gets `grace` seconds for running handlers.

    With `fd`, serve on an inherited listening socket (a worker of `stepline start --workers N`)."""
    try:
        await app.adapters.verify()  # refused before the port opens: a store that would lose what it is given
    except StoreUnavailableError as exc:
        console.print(f"[yellow]The store cannot be reached yet:[/] {escape(exc.message)}; serving, and retrying")
    except StoreError as exc:
        console.print(f"[bold red]Cannot use the store:[/] {escape(str(exc))}")
        await app.adapters.close()
        raise SystemExit(1) from None
    sock = socket.socket(fileno=fd) if fd is not None else bind(host, port)
    actual_port = sock.getsockname()[1]

    async def stop() -> None:
        await app.stop(grace)

    app.asgi.on_shutdown = stop
    app.asgi.allowed_hosts.add(host.lower().strip("[]"))
    server = uvicorn.Server(server_config(app.asgi, timeout_graceful_shutdown=int(grace)))
    watcher = asyncio.create_task(_watch(app)) if reload else None
    if banner:
        shown_host = f"[{host}]" if ":" in host else host
        mode = "dev" if app.dev else "start"
        console.print(
            f"[bold green]Stepline {mode}[/] · {app.root.name} · {len(app.project.steps)} steps · "
            f"{escape(app.adapters.url or 'store')} · [bold]http://{shown_host}:{actual_port}[/]"
        )
        if app.project.streams:
            names = ", ".join(sorted(app.project.streams))
            console.print(f"  streams: {escape(names)} · ws://{shown_host}:{actual_port}/__stepline/streams")
        if app.project.warnings:
            print_problems(app.project.warnings)
    # uvicorn re-raises the signal that stopped it once it has shut down; with these no-op handlers in
    # place that re-raise does nothing, and a drained process exits 0 instead of dying by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    # What is loaded by now (the project, its libraries) lives as long as the process: out of the cyclic
    # collector's sight, a full collection under load takes a millisecond, not tens (p99 of a GET: 6 ms, not 20).
    gc.collect()
    gc.freeze()
    try:
        await server.serve(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _watch(app: Stepline) -> None:
    """Reload on every change of a .py or .toml file; a broken edit is shown and the last good version serves."""
    sys.dont_write_bytecode = True  # a .pyc written within the same second as an edit could shadow it
    async for changes in awatch(
        app.root, watch_filter=PythonFilter(extra_extensions=(".toml",)), debounce=200, step=50
    ):
        changed = sorted({path for _, path in changes})
        problems = app.reload()
        names = ", ".join(p.rsplit("/", 1)[-1] for p in changed[:3])
        if problems:
            print_problems(
                problems, f"[bold red]reload failed[/] after changes to {names}; the last good version keeps serving:"
            )
        else:
            console.print(f"[green]reloaded[/] {len(app.project.steps)} steps (changed: {names})")
            if app.project.warnings:
                print_problems(app.project.warnings)
