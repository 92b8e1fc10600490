"""Motia's own published client, `@motiadev/stream-client-node`, against a Stepline server: written by
others for Motia's server, it connects unchanged, and its state follows Stepline's items, across a server
restart too (it reconnects every 2 s and joins again).

A test-only dependency, installed from the npm registry on first use into a cache of the machine's (never
vendored, never shipped). Its licence is Elastic-2.0 (see its package.json), which allows this use."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from ..conftest import ProjectFactory, free_port
from ..durability.helpers import healthy, kill_group, start_server, wait_until

VERSION = "0.17.6-beta.187"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stepline-tests" / f"motia-client-{VERSION}"

PROJECT = {
    "steps/progress_stream.py": """
        config = {"name": "progress", "schema": {"type": "object", "properties": {"pct": {"type": "integer"}}},
                  "baseConfig": {"storageType": "default"}}
    """,
    "steps/private_stream.py": """
        config = {"name": "private", "schema": {"type": "object"},
                  "canAccess": lambda subscription, auth: auth is not None and auth["user"] == subscription["groupId"]}
    """,
    "steps/set_step.py": """
        config = {"type": "api", "name": "Set", "path": "/set/{group}/{id}", "method": "POST"}
        async def handler(req, ctx):
            return {"status": 200, "body": await ctx.streams.progress.set(req.path_params["group"],
                                                                          req.path_params["id"], req.body)}
    """,
    "steps/delete_step.py": """
        config = {"type": "api", "name": "Delete", "path": "/set/{group}/{id}", "method": "DELETE"}
        async def handler(req, ctx):
            return {"status": 200, "body": await ctx.streams.progress.delete(req.path_params["group"],
                                                                             req.path_params["id"])}
    """,
    "steps/send_step.py": """
        config = {"type": "api", "name": "Send", "path": "/send/{group}", "method": "POST"}
        async def handler(req, ctx):
            await ctx.streams.progress.send({"groupId": req.path_params["group"]}, {"type": "note", "data": req.body})
            return {"status": 200, "body": {}}
    """,
    "auth.py": """
        def authenticate(request):
            return {"user": request.token} if request.token else None
    """,
    "stepline.toml": """
        [streams]
        authenticate = "auth:authenticate"
    """,
}

# Prints one JSON line per state change, per event and per error, tagged with the watch's name.
CLIENT = """
import { Stream } from "@motiadev/stream-client-node"
const out = (w, kind, value) => console.log(JSON.stringify({ w, kind, value }))
const stream = new Stream(process.argv[2], { protocols: ["Authorization", "alice"] })
const group = stream.subscribeGroup("progress", "g")
group.addChangeListener((state) => out("group", "state", state))
group.onEvent("note", (data) => out("group", "note", data))
const item = stream.subscribeItem("progress", "g", "a")
item.addChangeListener((state) => out("item", "state", state))
const mine = stream.subscribeGroup("private", "alice")
mine.addChangeListener((state) => out("mine", "state", state))
const theirs = stream.subscribeGroup("private", "bob")
theirs.onEvent("error", (data) => out("theirs", "error", data))
"""


def _install() -> Path:
    if (CACHE / "node_modules" / "@motiadev" / "stream-client-node").is_dir():
        return CACHE
    if shutil.which("npm") is None:
        pytest.fail("npm is needed for the Motia client test (Node.js and npm are on every machine here)")
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "package.json").write_text(json.dumps({"name": "motia-client-test", "private": True, "type": "module"}))
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", f"@motiadev/stream-client-node@{VERSION}"],
        cwd=CACHE,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return CACHE


class NodeClient:
    def __init__(self, url: str) -> None:
        cache = _install()
        script = cache / "client.mjs"
        script.write_text(CLIENT)
        self.proc = subprocess.Popen(
            ["node", str(script), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cache
        )
        self.seen: list[dict[str, Any]] = []

    async def until(self, w: str, kind: str, value: Any, timeout: float = 15) -> None:
        """Read lines until watch `w` reports `value` (a state, an event's data, an error)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                if any(s == {"w": w, "kind": kind, "value": value} for s in self.seen):
                    return
                line = await asyncio.to_thread(self.proc.stdout.readline)
                if not line:
                    raise AssertionError(f"the client exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                self.seen.append(json.loads(line))

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate()  # and closes the pipes


async def test_motias_node_client_follows_stepline_items(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(PROJECT)
    port = free_port()
    store = f"sqlite:///{tmp_path}/streams.db"
    log = tmp_path / "server.log"
    server = start_server(root, port, log, store=store)
    client: NodeClient | None = None
    try:
        await asyncio.to_thread(wait_until, lambda: healthy(port), 30, "the server")
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await http.post("/set/g/a", json={"pct": 1})
            client = NodeClient(f"ws://127.0.0.1:{port}")
            await client.until("group", "state", [{"pct": 1, "id": "a"}])  # the sync
            await client.until("item", "state", {"pct": 1, "id": "a"})
            await client.until("mine", "state", [])  # authenticated by the Authorization subprotocol
            await client.until(
                "theirs", "error", {"code": "STREAM_ACCESS_DENIED", "message": "access to private/bob denied"}
            )

            await http.post("/set/g/b", json={"pct": 2})
            await client.until("group", "state", [{"pct": 1, "id": "a"}, {"pct": 2, "id": "b"}])
            for pct in range(3, 13):  # updates in the same millisecond: each timestamp is newer than the last
                await http.post("/set/g/a", json={"pct": pct})
            await client.until("item", "state", {"pct": 12, "id": "a"})
            await client.until("group", "state", [{"pct": 12, "id": "a"}, {"pct": 2, "id": "b"}])
            await http.post("/send/g", json={"hello": 1})
            await client.until("group", "note", {"hello": 1})
            await http.delete("/set/g/b")
            await client.until("group", "state", [{"pct": 12, "id": "a"}])

        # The server goes away and comes back on the same port: the client joins again and syncs.
        kill_group(server)
        server.wait()
        server = start_server(root, port, log, store=store)
        await asyncio.to_thread(wait_until, lambda: healthy(port), 30, "the restarted server")
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await http.post("/set/g/c", json={"pct": 3})
            await client.until("group", "state", [{"pct": 12, "id": "a"}, {"pct": 3, "id": "c"}], timeout=20)
    finally:
        if client is not None:
            client.close()
        kill_group(server)
        server.wait()
