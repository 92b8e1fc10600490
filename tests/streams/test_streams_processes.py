"""Fan-out across processes: two `stepline start` servers on one store (the SQLite file, or Redis), a
change or an event made in either reaches the watchers of both, with no gap."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx2 as httpx

from stepline.client import StreamClient

from ..conftest import ProjectFactory, free_port
from ..durability.helpers import healthy, kill_group, start_server, wait_until
from .test_streams_ws import eventually

PROJECT = {
    "steps/feed_stream.py": 'config = {"name": "feed", "schema": {"type": "object"}}',
    "steps/post_step.py": """
        import os
        config = {"type": "api", "name": "Post", "path": "/post/{id}", "method": "POST"}
        async def handler(req, ctx):
            await ctx.streams.feed.set("all", req.path_params["id"], {"by": os.getpid()})
            return {"status": 200, "body": {"pid": os.getpid()}}
    """,
    "steps/ping_step.py": """
        config = {"type": "api", "name": "Ping", "path": "/ping", "method": "POST"}
        async def handler(req, ctx):
            await ctx.streams.feed.send({"groupId": "all"}, {"type": "ping", "data": req.body})
            return {"status": 200, "body": {}}
    """,
    "steps/burst_step.py": """
        config = {"type": "api", "name": "Burst", "path": "/burst/{prefix}", "method": "POST"}
        async def handler(req, ctx):
            for n in range(100):
                await ctx.streams.feed.set("all", f"{req.path_params['prefix']}{n % 10}", {"n": n})
            return {"status": 200, "body": {}}
    """,
}


async def test_changes_and_events_reach_the_watchers_of_every_process(
    make_project: ProjectFactory, shared_store: str, tmp_path: Path
) -> None:
    root = make_project(PROJECT)
    ports = [free_port(), free_port()]
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            servers.append(start_server(root, port, tmp_path / f"server-{port}.log", store=shared_store))
        for port in ports:
            await asyncio.to_thread(wait_until, lambda p=port: healthy(p), 30, f"the server on {port}")
        clients = [StreamClient(f"ws://127.0.0.1:{port}") for port in ports]
        watches = [await client.group("feed", "all") for client in clients]
        async with httpx.AsyncClient(timeout=10) as http:
            a = await http.post(f"http://127.0.0.1:{ports[0]}/post/x")
            b = await http.post(f"http://127.0.0.1:{ports[1]}/post/y")
            assert a.json()["pid"] != b.json()["pid"]
            for watch in watches:  # each process's watcher hears both: its own process's, and the other's
                got = {(await watch.next(10)).id for _ in range(2)}
                assert got == {"x", "y"}
            await http.post(f"http://127.0.0.1:{ports[1]}/ping", json={"n": 1})
            for watch in watches:
                event = await watch.next(10)
                assert (event.type, event.event, event.data) == ("event", "ping", {"n": 1})
            # Both write at once: every watcher ends with the same items at the same number.
            await asyncio.gather(*(http.post(f"http://127.0.0.1:{p}/burst/p{p}-") for p in ports))
        await eventually(lambda: {w.seq for w in watches} == {202}, 10)
        states = [sorted(w.state, key=lambda i: i["id"]) for w in watches]
        assert states[0] == states[1] and len(states[0]) == 22
        for client in clients:
            await client.close()
    finally:
        for server in servers:
            kill_group(server)
            server.wait()
