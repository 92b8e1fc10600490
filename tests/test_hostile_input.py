"""Hostile input gets a clear 4xx, fast, and never stalls other requests: over real HTTP and real sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from stepline import Stepline
from stepline.testing import serve

from .conftest import ProjectFactory

ITEMS = {
    "steps/items_step.py": """
        from pydantic import BaseModel

        class Item(BaseModel):
            name: str
            count: int

        class Basket(BaseModel):
            items: list[Item]
            note: dict | None = None

        config = {"type": "api", "name": "Basket", "path": "/basket", "method": "POST",
                  "bodySchema": Basket, "emits": ["basket.placed"]}

        async def handler(req, ctx):
            await ctx.emit("basket.placed", req.body)
            return {"status": 202, "body": {"items": len(req.body["items"])}}
    """,
    "steps/schema_step.py": """
        config = {"type": "api", "name": "Tree", "path": "/tree", "method": "POST",
                  "bodySchema": {"type": "object", "properties": {"tree": {}, "n": {"type": "integer"}}}}

        async def handler(req, ctx):
            return {"status": 200, "body": req.body}
    """,
    "steps/echo_step.py": """
        config = {"type": "api", "name": "Echo", "path": "/echo", "method": "POST"}

        async def handler(req, ctx):
            return {"status": 200, "body": {"body": req.body}}
    """,
    "steps/ping_step.py": """
        config = {"type": "api", "name": "Ping", "path": "/ping", "method": "GET"}

        async def handler(req, ctx):
            return {"pong": True}
    """,
    "steps/placed_step.py": """
        config = {"type": "event", "name": "Placed", "subscribes": ["basket.placed"]}

        async def handler(input, ctx):
            await ctx.state.set("placed", "last", input)
    """,
}

BIG = 123456789012345678901234567890


@pytest.fixture
async def app(make_project: ProjectFactory) -> AsyncIterator[object]:
    async with serve(make_project(ITEMS)) as running:
        yield running


async def test_integers_beyond_64_bits_get_400_naming_the_field(app: object) -> None:
    client = app.client  # type: ignore[attr-defined]
    body = b'{"items": [{"name": "tea", "count": %d}]}' % BIG
    r = await client.post("/basket", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    [error] = r.json()["errors"]
    assert error["path"] == "items.0.count" and "beyond 64 bits" in error["message"]
    # a JSON Schema body, and no schema at all: the same 400, never a float in its place
    r = await client.post("/tree", content=b'{"n": %d}' % BIG, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["path"] == "n"
    r = await client.post("/echo", content=b'{"deep": {"n": -%d}}' % BIG, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["path"] == "deep.n"
    # the largest numbers a store keeps exactly pass through unchanged
    edge = b'{"a": 18446744073709551615, "b": -9223372036854775808}'
    r = await client.post("/echo", content=edge, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["body"] == {"a": 2**64 - 1, "b": -(2**63)}


async def test_integers_beyond_64_bits_in_emitted_data_get_400_not_floats(app: object) -> None:
    client = app.client  # type: ignore[attr-defined]
    for path in ("/__stepline/emit", "/__workbench/api/emit"):
        body = b'{"topic": "basket.placed", "data": {"items": [], "id": %d}}' % BIG
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, path
        assert "data.id" in r.json()["error"] and "beyond 64 bits" in r.json()["error"]
    await app.settle()  # type: ignore[attr-defined]
    assert await app.state("placed", "last") is None  # type: ignore[attr-defined]


async def test_json_nested_deeper_than_the_limit_gets_400_naming_the_field(app: object) -> None:
    client = app.client  # type: ignore[attr-defined]
    deep = b'{"tree": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    r = await client.post("/tree", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400
    [error] = r.json()["errors"]
    assert error["path"].startswith("tree.0.0") and "nested more than" in error["message"]
    r = await client.post(
        "/basket", content=b'{"items": [], "note": ' + deep + b"}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "nested more than" in r.json()["errors"][0]["message"]
    # deep, but within the limit: fine
    ok = b'{"tree": ' + b"[" * 30 + b"]" * 30 + b"}"
    assert (await client.post("/tree", content=ok, headers={"content-type": "application/json"})).status_code == 200


async def test_a_body_schema_takes_json_only(app: object) -> None:
    client = app.client  # type: ignore[attr-defined]
    body = b'{"items": []}'
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
        r = await client.post("/basket", content=body, headers=headers)
        assert r.status_code == 415, headers
        assert "application/json" in r.json()["error"]
    r = await client.post("/basket", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 202
    r = await client.post("/basket", content=body, headers={"content-type": "application/vnd.basket+json"})
    assert r.status_code == 202


async def test_a_body_over_the_limit_gets_413_before_it_is_read_whole(make_project: ProjectFactory) -> None:
    async with serve(make_project(ITEMS), max_body=64 * 1024) as app:
        # declared too large: refused from the header, whatever follows
        r = await app.client.post("/basket", content=b"x" * (65 * 1024), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "64,0" not in r.text and "larger than 65,536 bytes" in r.json()["error"]

        # streamed without a length: refused once the limit is passed, not after 50 MB
        sent = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal sent
            for _ in range(800):  # 50 MB
                sent += 64 * 1024
                yield b" " * (64 * 1024)

        try:
            r = await app.client.post("/basket", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413
        except httpx.TransportError:
            pass  # the server closed the connection while the client was still sending: as it should
        assert sent < 5 * 1024 * 1024
        # the same limit guards Stepline's own routes
        r = await app.client.post("/__stepline/emit", content=b"x" * (65 * 1024))
        assert r.status_code == 413
        assert (await app.client.get("/ping")).json() == {"pong": True}


async def test_a_large_body_of_wrong_items_answers_a_short_report_fast(app: object) -> None:
    """1 MB of wrong-typed items: a capped list of errors, a small trace row, and other requests go on."""
    client = app.client  # type: ignore[attr-defined]
    wrong = {"items": [{"name": i, "count": "many"} for i in range(34_000)]}
    body = orjson.dumps(wrong)
    assert 900_000 < len(body) <= 1024 * 1024

    stalls: list[float] = []

    async def ping_meanwhile() -> None:
        while True:
            started = time.perf_counter()
            await client.get("/ping")
            stalls.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    pinger = asyncio.create_task(ping_meanwhile())
    try:
        started = time.perf_counter()
        r = await client.post("/basket", content=body, headers={"content-type": "application/json"})
        took = time.perf_counter() - started
    finally:
        pinger.cancel()
    assert r.status_code == 400
    report = r.json()
    assert len(report["errors"]) == 20 and "more" in report
    assert len(r.content) < 10_000
    assert all(len(e["message"]) <= 203 for e in report["errors"])
    assert took < 3.0, f"a 1 MB body took {took:.1f} s"
    assert stalls and max(stalls) < 2.0
    trace = await app.trace(r.json()["traceId"])  # type: ignore[attr-defined]
    assert len(orjson.dumps([t.data for t in trace])) < 20_000


async def test_trace_records_cut_event_data_too_large_to_keep_whole(app: object) -> None:
    client = app.client  # type: ignore[attr-defined]
    items = [{"name": "x" * 100, "count": i} for i in range(2000)]  # about 250 KB
    r = await client.post("/basket", json={"items": items})
    assert r.status_code == 202
    await app.settle()  # type: ignore[attr-defined]
    assert len((await app.state("placed", "last"))["items"]) == 2000  # type: ignore[attr-defined]  # the event: whole
    trace = await app.trace(r.headers["x-trace-id"])  # type: ignore[attr-defined]
    [emit] = [t for t in trace if t.kind == "emit"]
    assert "_truncated" in emit.data["data"] and "bytes" in emit.data["data"]["_truncated"]
    assert len(orjson.dumps(emit.data)) < 4096


async def test_unknown_workbench_paths_get_404_and_wrong_methods_405(app: object) -> None:
    client = app.client  # type: ignore[attr-defined]
    assert (await client.get("/__workbench/api/nope")).status_code == 404
    assert (await client.post("/__workbench/api/nope/deeper")).status_code == 404
    r = await client.post("/__workbench/api/graph")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    assert (await client.delete("/__workbench/api/traces")).status_code == 405
    assert (await client.get("/__workbench/no-such-file.js")).status_code == 404
    assert (await client.delete("/__workbench/")).status_code in (404, 405)
    assert (await client.get("/__stepline/nope")).status_code == 404


async def test_the_admin_routes_refuse_other_sites(app: object) -> None:
    """In dev the admin API and the Workbench are open: a web page on another site must not reach them."""
    client = app.client  # type: ignore[attr-defined]
    emit = b'{"topic": "basket.placed", "data": {"items": []}}'
    # a cross-site form post (text/plain needs no CORS preflight)
    for path in ("/__stepline/emit", "/__workbench/api/emit", "/__workbench/api/cron/Nope/run"):
        r = await client.post(
            path, content=emit, headers={"content-type": "text/plain", "origin": "https://evil.example"}
        )
        assert r.status_code == 403, path
        assert "another origin" in r.json()["error"]
    r = await client.post("/__stepline/emit", content=emit, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    # DNS rebinding: a page whose domain now resolves to 127.0.0.1 reads state through its own name
    r = await client.get("/__workbench/api/state", headers={"host": "evil.example:3000"})
    assert r.status_code == 403 and "Host" in r.json()["error"]
    # the page itself, from its own origin, and scripts on this machine: fine
    url = app.url  # type: ignore[attr-defined]
    r = await client.post("/__workbench/api/emit", content=emit, headers={"origin": url})
    assert r.status_code == 202
    assert (await client.get("/__workbench/api/state", headers={"host": "localhost:3000"})).status_code == 200
    assert (await client.get("/__workbench/api/state", headers={"host": "[::1]:3000"})).status_code == 200
    # health answers whatever the Host (load balancers), and user routes are the user's business
    assert (await client.get("/__stepline/health", headers={"host": "lb.internal"})).status_code == 200
    assert (await client.get("/ping", headers={"host": "api.example.com"})).status_code == 200


async def test_allowed_hosts_open_the_admin_routes_to_a_named_host(make_project: ProjectFactory) -> None:
    async with serve(make_project(ITEMS), allowed_hosts=["dev.box"]) as app:
        assert (await app.client.get("/__workbench/api/state", headers={"host": "dev.box:3000"})).status_code == 200
        assert (await app.client.get("/__workbench/api/state", headers={"host": "other.box"})).status_code == 403


def _raw_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within `seconds`, and what it sent first."""
    sock.settimeout(seconds)
    received = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, received
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        return True, received


async def test_idle_slow_header_and_slow_body_connections_are_closed(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepline.http import connections as _connections

    monkeypatch.setattr(_connections.GuardedHttpToolsProtocol, "head_timeout", 0.5)
    async with serve(make_project(ITEMS), body_timeout=0.5) as app:
        port = int(app.url.rsplit(":", 1)[1])

        def idle() -> tuple[bool, bytes]:
            with _raw_connection(port) as sock:
                return _closed_within(sock, 3)

        def slow_header() -> tuple[bool, bytes]:
            with _raw_connection(port) as sock:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
                started = time.monotonic()
                try:
                    while time.monotonic() - started < 3:  # a header line now and then, the head never finished
                        time.sleep(0.1)
                        sock.sendall(b"X-Slow: y\r\n")
                except OSError:  # closed by the server while sending
                    pass
                return _closed_within(sock, 3)

        def slow_body() -> tuple[bool, bytes]:
            with _raw_connection(port) as sock:
                sock.sendall(
                    b"POST /basket HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n{"
                )
                return _closed_within(sock, 3)

        def huge_header() -> tuple[bool, bytes]:
            with _raw_connection(port) as sock:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"y" * 100_000)
                return _closed_within(sock, 3)

        for name, probe in [("idle", idle), ("slow header", slow_header), ("slow body", slow_body)]:
            closed, answer = await asyncio.to_thread(probe)
            assert closed, f"a {name} connection was held"
            assert answer.startswith(b"HTTP/1.1 408"), (name, answer[:80])
        closed, answer = await asyncio.to_thread(huge_header)
        assert closed and answer.startswith(b"HTTP/1.1 431")
        assert (await app.client.get("/ping")).status_code == 200  # and the server serves on


def test_stepline_refuses_nothing_it_should_take(tmp_path: Path, make_project: ProjectFactory) -> None:
    """The limits leave ordinary traffic alone: a plain JSON POST of a few KB, a GET, an emit."""
    root = make_project(ITEMS)
    app = Stepline(root, dev=True, store=f"sqlite:///{tmp_path}/db.sqlite")

    async def run() -> None:
        async with app.lifespan():
            transport = httpx.ASGITransport(app=app.asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
                r = await client.post("/basket", json={"items": [{"name": "tea", "count": 2}] * 100})
                assert r.status_code == 202
                assert (await client.get("/ping")).status_code == 200
                r = await client.post("/__stepline/emit", json={"topic": "basket.placed", "data": {"items": []}})
                assert r.status_code == 202

    asyncio.run(run())
