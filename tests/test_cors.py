"""CORS on the project's API steps, over real HTTP: preflights answered for the origins allowed, nothing for
the others, and never a CORS header on Stepline's own routes, whatever the project allows."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from stepline.http.cors import CorsOptions
from stepline.testing import RunningApp, serve

from .conftest import ProjectFactory

APP = "https://app.example.com"
EVIL = "https://evil.example"
PROJECT = {
    "steps/items_step.py": """
        config = {"type": "api", "name": "AddItem", "path": "/items", "method": "POST"}
        async def handler(req, ctx):
            return {"status": 201, "body": {"added": req.body}}
    """,
    "steps/own_step.py": """
        from starlette.responses import JSONResponse
        config = {"type": "api", "name": "Own", "path": "/own", "method": "GET"}
        async def handler(req, ctx):  # a handler that sets CORS itself keeps its answer
            return JSONResponse({}, headers={"access-control-allow-origin": "https://partner.example"})
    """,
}


def _preflight(origin: str, method: str = "POST", headers: str = "content-type, authorization") -> dict[str, str]:
    asked = {"origin": origin, "access-control-request-method": method}
    return asked | ({"access-control-request-headers": headers} if headers else {})


def _cors_headers(headers: Mapping[str, str]) -> list[str]:
    return sorted(k for k in headers if k.lower().startswith("access-control-"))


def _allow(app: RunningApp, options: CorsOptions | None) -> None:
    app.stepline.asgi.cors = options  # the seam stepline.toml's [http] cors_origins is wired to


async def test_a_preflight_from_an_allowed_origin_gets_the_headers(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT)) as app:
        _allow(app, CorsOptions([APP], max_age=300))
        r = await app.client.options("/items", headers=_preflight(APP))
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == APP
        assert r.headers["access-control-allow-methods"] == "POST"
        assert r.headers["access-control-allow-headers"] == "content-type, authorization"
        assert r.headers["access-control-max-age"] == "300"
        assert "Origin" in r.headers["vary"]
        assert "access-control-allow-credentials" not in r.headers

        # the request the preflight was for: the page's script may read the answer and its trace id
        real = await app.client.post("/items", json={"name": "tea"}, headers={"origin": APP})
        assert real.status_code == 201
        assert real.headers["access-control-allow-origin"] == APP
        assert real.headers["access-control-expose-headers"] == "x-trace-id"
        assert "Origin" in real.headers["vary"]


async def test_a_disallowed_origin_gets_no_cors_headers(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT)) as app:
        _allow(app, CorsOptions([APP]))
        r = await app.client.options("/items", headers=_preflight(EVIL))
        assert r.status_code == 403
        assert _cors_headers(r.headers) == []
        assert EVIL in r.json()["error"]

        # a request sent anyway (a simple one needs no preflight) is served, but the browser gets nothing
        # that lets the page read it
        sent = await app.client.post("/items", json={}, headers={"origin": EVIL})
        assert sent.status_code == 201
        assert _cors_headers(sent.headers) == []
        assert "Origin" in sent.headers["vary"]  # the answer depends on the origin: caches must know


async def test_stepline_own_routes_never_get_cors_headers(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT)) as app:
        _allow(app, CorsOptions(["*"]))
        for path in ("/__stepline/live", "/__stepline/api/flows", "/__workbench/", "/openapi.json"):
            pre = await app.client.options(path, headers=_preflight(APP))
            assert _cors_headers(pre.headers) == [], path
            assert pre.status_code in (403, 404, 405), path
            got = await app.client.get(path, headers={"origin": APP})
            assert _cors_headers(got.headers) == [], path
        # while the project's routes answer any origin
        ok = await app.client.options("/items", headers=_preflight(EVIL))
        assert ok.headers["access-control-allow-origin"] == "*"


async def test_methods_and_headers_not_allowed_are_refused(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT)) as app:
        _allow(app, CorsOptions([APP], allow_methods=["GET", "POST"], allow_headers=["authorization"]))
        delete = await app.client.options("/items", headers=_preflight(APP, method="DELETE"))
        assert delete.status_code == 403 and "DELETE is not allowed" in delete.json()["error"]
        header = await app.client.options("/items", headers=_preflight(APP, headers="x-secret"))
        assert header.status_code == 403 and "x-secret" in header.json()["error"]
        # Content-Type is on the CORS safelist: a JSON call needs no allow_headers entry for it
        ok = await app.client.options("/items", headers=_preflight(APP, headers="Content-Type, Authorization"))
        assert ok.status_code == 204


async def test_credentials_name_the_origin_and_handler_headers_win(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT)) as app:
        _allow(app, CorsOptions([APP], allow_credentials=True))
        r = await app.client.post("/items", json={}, headers={"origin": APP})
        assert r.headers["access-control-allow-origin"] == APP
        assert r.headers["access-control-allow-credentials"] == "true"
        own = await app.client.get("/own", headers={"origin": APP})
        assert own.headers["access-control-allow-origin"] == "https://partner.example"


async def test_no_options_or_no_origins_add_nothing_and_options_can_change(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT)) as app:
        assert app.stepline.asgi.cors is None
        plain = await app.client.options("/items", headers=_preflight(APP))
        assert plain.status_code == 405 and _cors_headers(plain.headers) == []  # no CORS: the route answers
        _allow(app, CorsOptions([]))
        assert (await app.client.options("/items", headers=_preflight(APP))).status_code == 405
        _allow(app, CorsOptions([APP]))
        assert app.stepline.asgi.cors == CorsOptions([APP])
        assert (await app.client.options("/items", headers=_preflight(APP))).status_code == 204
        _allow(app, None)
        assert (await app.client.options("/items", headers=_preflight(APP))).status_code == 405


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"allow_origins": ["app.example.com"]}, "is not an origin"),
        ({"allow_origins": ["https://app.example.com/path"]}, "is not an origin"),
        ({"allow_origins": ["https://app.example.com:port"]}, "is not an origin"),
        ({"allow_origins": ["*"], "allow_credentials": True}, "list the origins"),
        ({"allow_origins": [APP], "max_age": -1}, "0 or more"),
    ],
)
def test_options_that_cannot_work_are_refused_when_made(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorsOptions(**options)  # type: ignore[arg-type]


def test_an_origin_with_a_trailing_slash_or_capitals_matches() -> None:
    from stepline.http.cors import Cors

    cors = Cors(CorsOptions(["https://App.Example.com/", "http://localhost:5173"]))
    assert cors.allows("https://app.example.com")
    assert cors.allows("http://localhost:5173")
    assert not cors.allows("http://localhost:5174")
