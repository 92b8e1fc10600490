"""Streams over a real WebSocket: Stepline's Python client and a raw `websockets` client speaking Motia's
protocol, against a uvicorn server on a free port, on every store."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

import stepline.core.streams as streams_module
from stepline import _errors
from stepline.adapters.base import STREAM_LOG
from stepline.client import StreamClient, StreamRefusedError, Watch
from stepline.core.streams import OUTBOX_MESSAGES
from stepline.testing import Answer, ScriptedLLM, serve

from ..conftest import ProjectFactory

PROJECT = {
    "steps/progress_stream.py": """
        from pydantic import BaseModel

        class Progress(BaseModel):
            pct: int
            note: str = ""

        config = {"name": "progress", "schema": Progress, "baseConfig": {"storageType": "default"}}
    """,
    "steps/private_stream.py": """
        config = {"name": "private", "schema": {"type": "object"}}

        def can_access(subscription, auth):
            # Motia's spelling (subscription["groupId"]) and Stepline's (subscription.group_id) both work.
            return auth is not None and subscription["groupId"] == auth["user"]
    """,
    "steps/set_step.py": """
        config = {"type": "api", "name": "Set", "path": "/set/{group}/{id}", "method": "POST"}
        async def handler(req, ctx):
            item = await ctx.streams.progress.set(req.path_params["group"], req.path_params["id"], req.body)
            return {"status": 200, "body": item}
    """,
    "steps/sync_step.py": """
        config = {"type": "api", "name": "SyncSet", "path": "/sync-set/{id}", "method": "POST"}
        def handler(req, ctx):  # a sync handler: the same calls, blocking
            item = ctx.streams.progress.set("g", req.path_params["id"], req.body)
            return {"status": 200, "body": {"set": item, "group": ctx.streams["progress"].get_group("g")}}
    """,
    "steps/event_step.py": """
        config = {"type": "event", "name": "Notify", "subscribes": ["notify"]}
        async def handler(input, ctx):
            await ctx.streams.progress.send({"groupId": input["group"], "id": input.get("id")},
                                            {"type": "note", "data": input["text"]})
    """,
    "auth.py": """
        from stepline import StreamAuthError

        def authenticate(request):
            if request.token is None:
                return None  # anonymous
            if request.token == "crash":
                return 1 / 0  # a bug in the hook
            if not request.token.startswith("user-"):
                raise StreamAuthError("the token is not one of ours")
            return {"user": request.token.removeprefix("user-")}
    """,
    "stepline.toml": """
        [streams]
        authenticate = "auth:authenticate"
    """,
}


async def eventually(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - a condition on several objects, no one event to wait on
            await asyncio.sleep(0.02)


async def drain(ws: Any) -> None:
    """Read until the server closes the connection (ConnectionClosed)."""
    async with asyncio.timeout(10):
        while True:
            await ws.recv()


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://")


async def recv(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def join(ws: Any, sub: str, stream: str, group: str, id: str | None = None) -> None:
    data = {"streamName": stream, "groupId": group, "subscriptionId": sub}
    if id is not None:
        data["id"] = id
    await ws.send(json.dumps({"type": "join", "data": data}))


async def test_join_sync_then_changes_events_and_leave(make_project: ProjectFactory, store: str) -> None:
    root = make_project(PROJECT)
    async with serve(root, store=store) as app:
        hub = app.stepline.streams
        assert hub is not None
        await hub.set("progress", "g", "a", {"pct": 1})
        async with websockets.connect(ws_url(app.url)) as ws:  # Motia's clients connect at the root
            await join(ws, "s1", "progress", "g")
            sync = await recv(ws)
            assert sync["event"] == {"type": "sync", "data": [{"pct": 1, "note": "", "id": "a"}]}
            assert (sync["streamName"], sync["groupId"], sync["seq"]) == ("progress", "g", 1)
            await join(ws, "s2", "progress", "g", "b")  # an item not there yet: its sync says so
            item = await recv(ws)
            assert item["id"] == "b" and item["event"] == {"type": "sync", "data": None}

            assert (await app.client.post("/set/g/b", json={"pct": 5})).status_code == 200
            created = await recv(ws)  # once per connection: the client hands it to both of its watches
            assert created["event"] == {"type": "create", "data": {"pct": 5, "note": "", "id": "b"}}
            assert created["id"] == "b" and created["seq"] == 2
            await app.client.post("/set/g/b", json={"pct": 6})
            updated = await recv(ws)
            assert updated["event"]["type"] == "update" and updated["event"]["data"]["pct"] == 6
            assert updated["timestamp"] > created["timestamp"] > sync["timestamp"]  # strictly increasing

            await app.stepline.emit("notify", {"group": "g", "id": "b", "text": "halfway"})
            note = await recv(ws)
            assert note["id"] == "b" and note["event"] == {
                "type": "event",
                "event": {"type": "note", "data": "halfway"},
            }
            assert "seq" not in note  # an event changes no item

            assert await hub.delete("progress", "g", "b") == {"pct": 6, "note": "", "id": "b"}
            deleted = await recv(ws)
            assert deleted["event"] == {"type": "delete", "data": {"id": "b"}} and deleted["seq"] == 4

            await ws.send(
                json.dumps(
                    {"type": "leave", "data": {"streamName": "progress", "groupId": "g", "subscriptionId": "s1"}}
                )
            )
            await ws.send(
                json.dumps(
                    {
                        "type": "leave",
                        "data": {"streamName": "progress", "groupId": "g", "id": "b", "subscriptionId": "s2"},
                    }
                )
            )
            await asyncio.sleep(0.1)
            await hub.set("progress", "g", "c", {"pct": 1})
            with pytest.raises(TimeoutError):
                await recv(ws, timeout=0.3)  # left: nothing more comes
            assert hub.watchers == 0


async def test_item_and_group_scopes_see_only_their_own(make_project: ProjectFactory) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app, StreamClient(app.url) as client:
        hub = app.stepline.streams
        assert hub is not None
        one = await client.item("progress", "g", "one")
        group = await client.group("progress", "g")
        other = await client.group("progress", "other")
        await hub.set("progress", "g", "two", {"pct": 2})
        await hub.set("progress", "g", "one", {"pct": 1})
        await hub.set("progress", "other", "one", {"pct": 9})
        assert (await one.next(5)).data == {"pct": 1, "note": "", "id": "one"}  # not "two", nor other's "one"
        assert [m.data["id"] for m in [await group.next(5), await group.next(5)]] == ["two", "one"]
        assert (await other.next(5)).data["pct"] == 9
        assert one.state == {"pct": 1, "note": "", "id": "one"}
        assert sorted(i["id"] for i in group.state) == ["one", "two"]
        await app.stepline.emit("notify", {"group": "g", "text": "to the group"})  # no id: the group only
        assert (await group.next(5)).event == "note"
        await app.stepline.settle()
        with pytest.raises(TimeoutError):
            await one.next(0.3)


async def test_no_gap_between_snapshot_and_updates_under_concurrent_writes(
    make_project: ProjectFactory, store: str
) -> None:
    """Clients join while writers change the group as fast as they can: each ends with exactly the store's
    items, its numbers strictly increasing (with none missing for a client that keeps up)."""
    root = make_project(PROJECT)
    async with serve(root, store=store) as app:
        hub = app.stepline.streams
        assert hub is not None

        async def writer(w: int) -> None:
            for n in range(150):
                await asyncio.sleep(0.001)  # spread over a moment, for the clients to join in the middle
                await hub.set("progress", "busy", f"{w}-{n % 7}", {"pct": n})
                if n % 5 == 0:
                    await hub.delete("progress", "busy", f"{w}-{(n + 3) % 7}")

        writers = [asyncio.create_task(writer(w)) for w in range(3)]
        clients: list[StreamClient] = []
        watches = []
        seen: list[list[tuple[int, str, str]]] = []

        async def follow(watch: Watch, into: list[tuple[int, str, str]]) -> None:
            async for message in watch:
                if message.seq is not None:
                    into.append((message.seq, message.type, str(message.id)))

        followers = []
        for _ in range(3):  # in pairs at once: two first joins of the channel race to set its number
            await asyncio.sleep(random.uniform(0.01, 0.05))
            pair = [StreamClient(app.url), StreamClient(app.url)]
            clients += pair
            for watch in await asyncio.gather(*(c.group("progress", "busy") for c in pair)):
                watches.append(watch)
                seen.append([])
                followers.append(asyncio.create_task(follow(watch, seen[-1])))
        await asyncio.gather(*writers)
        items, seq = await hub.store.snapshot("progress", "busy")
        assert seq < STREAM_LOG, "the whole run is in the log, to check against"
        log = {c.seq: c for c in await hub.store.changes("progress", "busy", 0) or []}
        await eventually(lambda: all(w.seq == seq for w in watches), 10)
        assert any(0 < w_seen[0][0] - 1 < seq - 50 for w_seen in seen if w_seen), "some joined mid-way"
        for watch, got in zip(watches, seen, strict=True):
            assert sorted(watch.state, key=lambda x: x["id"]) == sorted(items.values(), key=lambda x: x["id"])
            numbers = [n for n, _, _ in got]
            assert numbers == sorted(set(numbers)), "numbers strictly increase"
            # What a client skipped is only an update superseded by a later change of the same item, while
            # both waited to be sent (its outbox keeps the newest): never a create, a delete, or a last word.
            received = set(numbers)
            for n in range(numbers[0] if numbers else seq + 1, seq + 1):
                if n not in received:
                    change = log[n]
                    assert change.op == "update", f"change {n} ({change.op} {change.id}) never arrived"
                    assert any(m > n and i == change.id for m, _, i in got), f"update {n} was the last word"
        for task in followers:
            task.cancel()
        for client in clients:
            await client.close()


async def test_items_are_validated_against_the_schema(make_project: ProjectFactory) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app:
        hub = app.stepline.streams
        assert hub is not None
        with pytest.raises(_errors.SchemaValidationError) as bad:
            await hub.set("progress", "g", "a", {"pct": "lots"})
        assert bad.value.errors[0].path == "pct" and "progress" in str(bad.value)
        with pytest.raises(_errors.SchemaValidationError, match="a stream item is a JSON object"):
            await hub.set("progress", "g", "a", [1, 2])
        synced = await app.client.post("/sync-set/s", json={"pct": 3})
        assert synced.json() == {"set": {"pct": 3, "note": "", "id": "s"}, "group": [{"pct": 3, "note": "", "id": "s"}]}
        await hub.delete("progress", "g", "s")
        response = await app.client.post("/set/g/a", json={"note": "no pct"})
        assert response.status_code == 500 and "pct" in response.json()["detail"]
        assert await hub.get("progress", "g", "a") is None  # nothing was stored


async def test_authentication_and_access_refusals_say_why(make_project: ProjectFactory) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app:
        hub = app.stepline.streams
        assert hub is not None
        await hub.set("private", "alice", "x", {"secret": 1})
        with pytest.raises(InvalidStatus) as refused:  # refused before the upgrade
            async with websockets.connect(ws_url(app.url) + "?authToken=forged"):
                pass
        assert refused.value.response.status_code == 401
        body = json.loads(refused.value.response.body)
        assert body == {"error": "the token is not one of ours", "code": "STREAM_UNAUTHORIZED"}
        with pytest.raises(StreamRefusedError) as unauthorized:
            async with StreamClient(app.url, token="forged"):
                pass
        assert unauthorized.value.code == "STREAM_UNAUTHORIZED"

        # The token as a subprotocol, as Motia's clients send it; the server answers "Authorization".
        async with websockets.connect(ws_url(app.url), subprotocols=["Authorization", "user-alice"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "Authorization"
            await join(ws, "mine", "private", "alice")
            assert (await recv(ws))["event"]["data"] == [{"secret": 1, "id": "x"}]
            await join(ws, "theirs", "private", "bob")
            denied = await recv(ws)
            assert denied["groupId"] == "bob"
            assert denied["event"] == {
                "type": "event",
                "event": {
                    "type": "error",
                    "data": {"code": "STREAM_ACCESS_DENIED", "message": "access to private/bob denied"},
                },
            }
            await join(ws, "none", "nosuch", "g")
            missing = await recv(ws)
            assert missing["event"]["event"]["data"]["code"] == "STREAM_NOT_FOUND"
            assert "streams: private, progress" in missing["event"]["event"]["data"]["message"]
            await ws.send("not json")
            assert (await recv(ws))["event"]["event"]["data"]["code"] == "STREAM_BAD_REQUEST"
            await ws.send(json.dumps({"type": "join", "data": {"streamName": "progress", "groupId": "g"}}))
            bad = (await recv(ws))["event"]["event"]["data"]
            assert bad["code"] == "STREAM_BAD_REQUEST" and "subscriptionId" in bad["message"]

        async with StreamClient(app.url) as anonymous:  # no token: anonymous, which can_access refuses
            with pytest.raises(StreamRefusedError) as anon:
                await anonymous.group("private", "alice")
            assert anon.value.code == "STREAM_ACCESS_DENIED"
            assert (await anonymous.group("progress", "g")).state == []  # a stream without a check: open


async def test_reconnect_resumes_from_the_log_or_resyncs_past_it(make_project: ProjectFactory, store: str) -> None:
    root = make_project(PROJECT)
    async with serve(root, store=store) as app:
        hub = app.stepline.streams
        assert hub is not None
        await hub.set("progress", "g", "a", {"pct": 0})
        async with StreamClient(app.url, reconnect_delay=0.2) as client:
            watch = await client.group("progress", "g")
            assert watch.seq == 1
            await client.drop_connection()
            await asyncio.sleep(0.05)
            for n in range(1, 5):  # while it is away
                await hub.set("progress", "g", f"n{n}", {"pct": n})
            await hub.set("progress", "g", "a", {"pct": 5})
            replayed = [await watch.next(5) for _ in range(5)]
            assert [m.type for m in replayed] == ["create"] * 4 + ["update"]  # what it missed, from the log
            assert [m.seq for m in replayed] == [2, 3, 4, 5, 6] and client.connections == 2
            assert sorted(i["id"] for i in watch.state) == ["a", "n1", "n2", "n3", "n4"]
            assert watch.state[0] == {"pct": 5, "note": "", "id": "a"}

            client.reconnect_delay = 5.0  # away long enough for the writes below
            await client.drop_connection()
            await asyncio.sleep(0.05)

            async def write(w: int) -> None:
                for n in range(w, STREAM_LOG + 10, 10):  # more than the log keeps
                    await hub.set("progress", "g", f"i{n % 3}", {"pct": n})

            await asyncio.gather(*(write(w) for w in range(10)))
            resynced = await watch.next(10)
            assert resynced.type == "sync" and resynced.seq == 6 + STREAM_LOG + 10
            assert sorted(i["id"] for i in watch.state) == ["a", "i0", "i1", "i2", "n1", "n2", "n3", "n4"]


async def test_motia_clients_rejoin_after_a_reconnect_and_get_a_fresh_sync(make_project: ProjectFactory) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app:
        hub = app.stepline.streams
        assert hub is not None
        await hub.set("progress", "g", "a", {"pct": 1})
        async with websockets.connect(ws_url(app.url)) as ws:
            await join(ws, "s", "progress", "g", "a")
            first = await recv(ws)
        await hub.set("progress", "g", "a", {"pct": 2})
        async with websockets.connect(ws_url(app.url)) as ws:  # the same join again, as Motia's client sends it
            await join(ws, "s", "progress", "g", "a")
            again = await recv(ws)
            assert again["event"] == {"type": "sync", "data": {"pct": 2, "note": "", "id": "a"}}
            assert again["timestamp"] > first["timestamp"]


class RawSocket:
    """A WebSocket client on a plain socket with a small receive buffer, that reads only when told to:
    a client that stops reading, for real (a library client keeps reading into its own buffers)."""

    def __init__(self, url: str, join: dict[str, Any]) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        payload = json.dumps(join).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload)) + mask + masked)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed without a close frame")
            data += chunk
        return data

    def read_until_close(self) -> tuple[int, str, int]:
        """Read frames until the server's close frame: (code, reason, text frames read before it)."""
        self.sock.settimeout(30)
        texts = 0
        while True:
            first, second = self._exact(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._exact(8))[0]
            body = self._exact(length)
            if first & 0x0F == 0x8:
                return struct.unpack("!H", body[:2])[0], body[2:].decode(), texts
            texts += 1


async def test_a_slow_client_is_closed_without_slowing_the_step_or_growing_memory(
    make_project: ProjectFactory,
) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app:
        hub = app.stepline.streams
        assert hub is not None
        big = "x" * 20_000
        slow = await asyncio.to_thread(
            RawSocket,
            app.url,
            {"type": "join", "data": {"streamName": "progress", "groupId": "g", "subscriptionId": "s"}},
        )
        fast = StreamClient(app.url)
        watch = await fast.group("progress", "g")
        await eventually(lambda: hub.watchers == 2, 5)
        # Updates of one item are coalesced while they wait: the slow client is not closed for those...
        for n in range(OUTBOX_MESSAGES * 3):
            await hub.set("progress", "g", "same", {"pct": n, "note": big})
            await asyncio.sleep(0)  # (a memory store never waits: let the senders run, as I/O would)
        outboxes = list(hub._watches)
        assert len(outboxes) == 2 and all(len(o) <= OUTBOX_MESSAGES and not o.overflowed for o in outboxes)
        assert max(len(o) for o in outboxes) > 0  # the slow one has updates waiting
        # ...but distinct items are not: past the bound the connection is closed with the documented code.
        started = asyncio.get_running_loop().time()
        for n in range(OUTBOX_MESSAGES * 2):
            await hub.set("progress", "g", f"i{n}", {"pct": n, "note": big})
            await asyncio.sleep(0)
            assert all(len(o) <= OUTBOX_MESSAGES for o in outboxes)  # bounded at every step
        took = asyncio.get_running_loop().time() - started
        assert took < 20, "the writer never waits for a reader"
        assert any(o.overflowed for o in outboxes)
        code, reason, _ = await asyncio.to_thread(slow.read_until_close)
        assert (code, reason) == (1008, "slow consumer")
        # The client that kept up has everything.
        await eventually(lambda: watch.seq == OUTBOX_MESSAGES * 5, 20)
        assert len(watch.state) == OUTBOX_MESSAGES * 2 + 1
        await eventually(lambda: hub.watchers == 1, 5)
        slow.sock.close()
        await fast.close()


LLM_PROJECT = {
    "steps/answers_stream.py": """
        config = {"name": "answers", "schema": {"type": "object", "properties": {"text": {"type": "string"},
                  "done": {"type": "boolean"}, "q": {"type": "string"}}, "required": ["text", "done"]}}
    """,
    "steps/ask_step.py": """
        config = {"type": "event", "name": "Ask", "subscribes": ["ask"]}
        async def handler(input, ctx):  # an event step: its only way to a browser is a stream
            target = ctx.streams.answers.item("chats", input["id"], extra={"q": input["q"]})
            await ctx.llm.stream(input["q"], to=target).collect()
    """,
}


async def test_an_llm_stream_writes_its_tokens_to_a_stream_item_as_they_come(make_project: ProjectFactory) -> None:
    with ScriptedLLM() as llm:
        llm.add(Answer(text="one two three four five six", pace=0.06))
        root = make_project(LLM_PROJECT)
        async with serve(root, store="memory://", llm=llm.settings()) as app, StreamClient(app.url) as client:
            watch = await client.item("answers", "chats", "c1")
            await app.stepline.emit("ask", {"id": "c1", "q": "count"})
            texts = []
            while True:
                message = await watch.next(5)
                texts.append(message.data["text"])
                if message.data["done"]:
                    break
            assert texts[-1] == "one two three four five six" and watch.state["q"] == "count"
            assert len(texts) >= 4, "the text arrives as it grows, not once at the end"
            assert all(b.startswith(a) for a, b in itertools.pairwise(texts))


async def test_a_process_stops_listening_when_no_one_watches_and_starts_again(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(streams_module, "IDLE_STOP", 0.1)
    root = make_project(PROJECT)
    async with serve(root, store=f"sqlite:///{tmp_path}/s.db") as app:
        hub = app.stepline.streams
        assert hub is not None
        async with StreamClient(app.url) as client:
            watch = await client.group("progress", "g")
            assert hub._listener is not None
            await watch.leave()
            await eventually(lambda: hub._listener is None, 5)  # SQLite's poller no longer runs
            again = await client.group("progress", "g")
            assert hub._listener is not None
            await hub.set("progress", "g", "a", {"pct": 1})
            assert (await again.next(5)).type == "create"


async def test_a_thousand_watchers_leave_room_for_requests_and_each_kind_has_its_own_bound(
    make_project: ProjectFactory,
) -> None:
    root = make_project(
        {
            **PROJECT,
            "steps/slow_step.py": """
                import asyncio
                config = {"type": "api", "name": "Slow", "path": "/slow", "method": "GET"}
                async def handler(req, ctx):
                    await asyncio.sleep(1)
                    return {"status": 200, "body": {}}
            """,
        }
    )
    async with serve(root, store="memory://") as app:
        sockets = [await websockets.connect(ws_url(app.url)) for _ in range(1100)]
        try:
            assert (await app.client.get("/__stepline/health")).status_code == 200  # not uvicorn's 503
            assert (await app.client.post("/set/g/a", json={"pct": 1})).status_code == 200
            streams = app.stepline.asgi.streams
            assert streams is not None and streams.sockets == 1100
            streams.max_sockets = 1100
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(ws_url(app.url))
            assert refused.value.response.status_code == 503
            assert json.loads(refused.value.response.body)["code"] == "STREAM_UNAVAILABLE"
            over = await app.client.get("/__stepline/streams/progress/g")
            assert over.status_code == 503 and over.json()["code"] == "STREAM_UNAVAILABLE"
        finally:
            for ws in sockets:
                await ws.close()
        app.stepline.asgi.max_requests = 2
        slow = [asyncio.create_task(app.client.get("/slow")) for _ in range(2)]
        await asyncio.sleep(0.3)
        busy = await app.client.get("/slow")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "in flight" in busy.json()["error"]
        assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]
