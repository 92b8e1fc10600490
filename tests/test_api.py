"""API steps over real HTTP: a uvicorn server on a free port, an HTTP client."""

from __future__ import annotations

import time

import pytest

from stepline.testing import Answer, ScriptedLLM, serve

from .conftest import ProjectFactory

ORDERS = {
    "steps/orders/models.py": """
        from pydantic import BaseModel, Field

        class NewOrder(BaseModel):
            item: str
            quantity: int = Field(gt=0)

        class Order(BaseModel):
            id: str
            item: str
            quantity: int
    """,
    "steps/orders/create_order_step.py": """
        from .models import NewOrder, Order
        config = {
            "type": "api", "name": "CreateOrder", "path": "/orders", "method": "POST",
            "bodySchema": NewOrder, "responseSchema": {201: Order}, "emits": [],
        }
        async def handler(req, ctx):
            return {"status": 201, "body": {"id": "o-1", **req.body}, "headers": {"x-order": "o-1"}}
    """,
    "steps/orders/get_order_step.py": """
        config = {"type": "api", "name": "GetOrder", "path": "/shops/:shop/orders/{orderId}", "method": "GET"}
        async def handler(req, ctx):
            return {"status": 200, "body": {
                "attr": req.path_params, "key": req["pathParams"], "get": req.get("pathParams"),
                "camel": req.pathParams, "query": req.query_params, "agent": req.headers.get("user-agent"),
            }}
    """,
    "steps/orders/methods_step.py": """
        config = {"type": "api", "name": "Patch", "path": "/orders/{id}", "method": "PATCH"}
        async def handler(req, ctx):
            return {"status": 200, "body": {"method": req.method, "raw": req.rawBody, "body": req.body}}
    """,
    "steps/orders/delete_step.py": """
        config = {"type": "api", "name": "Delete", "path": "/orders/{id}", "method": "DELETE"}
        def handler(req, ctx):  # a sync handler runs on a worker thread
            ctx.state.set("deleted", req.path_params["id"], True)
            return None
    """,
    "steps/orders/search_step.py": """
        config = {
            "type": "api", "name": "Search", "path": "/search", "method": "GET",
            "queryParams": {"type": "object", "properties": {"page": {"type": "integer", "minimum": 1},
                            "tag": {"type": "string"}}, "required": ["page"]},
        }
        async def handler(req, ctx):
            return {"status": 200, "body": req.queryParams}
    """,
    "steps/orders/broken_step.py": """
        config = {"type": "api", "name": "Broken", "path": "/broken", "method": "GET",
                  "responseSchema": {"type": "object", "required": ["ok"]}}
        async def handler(req, ctx):
            if "raise" in req.query_params:
                raise RuntimeError("boom")
            return {"status": 200, "body": {"nope": 1}}
    """,
    "steps/orders/html_step.py": """
        from starlette.responses import HTMLResponse
        config = {"type": "api", "name": "Html", "path": "/page", "method": "GET"}
        async def handler(req, ctx):
            return HTMLResponse("<h1>hi</h1>")
    """,
}


async def test_body_validation_and_response(make_project: ProjectFactory) -> None:
    async with serve(make_project(ORDERS)) as app:
        ok = await app.client.post("/orders", json={"item": "tea", "quantity": 2})
        assert ok.status_code == 201
        assert ok.json() == {"id": "o-1", "item": "tea", "quantity": 2}
        assert ok.headers["x-order"] == "o-1"
        assert len(ok.headers["x-trace-id"]) == 36

        bad = await app.client.post("/orders", json={"item": "tea", "quantity": 0})
        assert bad.status_code == 400
        assert bad.json()["errors"] == [{"path": "quantity", "message": "Input should be greater than 0"}]

        missing = await app.client.post("/orders", json={})
        assert missing.status_code == 400
        assert {e["path"] for e in missing.json()["errors"]} == {"item", "quantity"}

        not_json = await app.client.post("/orders", content=b"{nope", headers={"content-type": "application/json"})
        assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["errors"][0]["message"]

        empty = await app.client.post("/orders")
        assert empty.status_code == 400 and empty.json()["errors"][0]["message"] == "a JSON body is required"


async def test_path_params_both_syntaxes_and_request_read_both_ways(make_project: ProjectFactory) -> None:
    async with serve(make_project(ORDERS)) as app:
        r = await app.client.get("/shops/s1/orders/o-9?x=1&x=2&y=z", headers={"user-agent": "t"})
        assert r.status_code == 200
        body = r.json()
        expected = {"shop": "s1", "orderId": "o-9"}
        assert body["attr"] == body["key"] == body["get"] == body["camel"] == expected
        assert body["query"] == {"x": ["1", "2"], "y": "z"}
        assert body["agent"] == "t"


async def test_any_method_raw_body_and_sync_handler(make_project: ProjectFactory) -> None:
    async with serve(make_project(ORDERS)) as app:
        r = await app.client.patch("/orders/7", content=b'{"a": 1}')
        assert r.json() == {"method": "PATCH", "raw": '{"a": 1}', "body": {"a": 1}}
        text = await app.client.patch("/orders/7", content=b"plain words", headers={"content-type": "text/plain"})
        assert text.json()["body"] == "plain words"
        deleted = await app.client.delete("/orders/7")
        assert deleted.status_code == 204
        assert await app.state("deleted", "7") is True
        assert (await app.client.put("/orders/7")).status_code == 405
        assert (await app.client.get("/nowhere")).status_code == 404


async def test_query_validation_with_coercion(make_project: ProjectFactory) -> None:
    async with serve(make_project(ORDERS)) as app:
        ok = await app.client.get("/search?page=2&tag=x")
        assert ok.json() == {"page": 2, "tag": "x"}
        bad = await app.client.get("/search?page=0")
        assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "page"
        missing = await app.client.get("/search")
        assert missing.status_code == 400 and "'page' is a required property" in missing.text


async def test_handler_errors_and_response_schema(make_project: ProjectFactory) -> None:
    async with serve(make_project(ORDERS)) as app:
        crash = await app.client.get("/broken?raise=1")
        assert crash.status_code == 500
        assert crash.json()["detail"] == "RuntimeError: boom"
        trace = await app.trace(crash.json()["traceId"])
        end = next(r for r in trace if r.kind == "end")
        assert end.data["status"] == "error" and "RuntimeError: boom" in end.data["error"]

        wrong = await app.client.get("/broken")
        assert wrong.status_code == 500
        assert "does not match its schema" in wrong.json()["detail"]


async def test_starlette_response_passes_through(make_project: ProjectFactory) -> None:
    async with serve(make_project(ORDERS)) as app:
        r = await app.client.get("/page")
        assert r.text == "<h1>hi</h1>" and r.headers["content-type"].startswith("text/html")


STREAMING = {
    "steps/tokens_step.py": """
        import asyncio
        from starlette.responses import StreamingResponse
        config = {"type": "api", "name": "Tokens", "path": "/tokens", "method": "GET"}
        async def handler(req, ctx):
            async def events():
                yield "data: first\\n\\n"
                await asyncio.sleep(1.0)  # a slow model: the first token must not wait for this
                yield "data: second\\n\\n"
                yield "event: done\\ndata: {}\\n\\n"
            return StreamingResponse(events(), media_type="text/event-stream")
    """,
    "steps/chat_step.py": """
        from starlette.responses import StreamingResponse
        config = {"type": "api", "name": "Chat", "path": "/chat", "method": "GET"}
        async def handler(req, ctx):
            stream = ctx.llm.stream(req.query_params["q"])
            async def events():
                async for piece in stream:
                    yield f"data: {piece}\\n\\n"
                yield f"event: usage\\ndata: {stream.usage.output_tokens}\\n\\n"
            return StreamingResponse(events(), media_type="text/event-stream")
    """,
}


async def test_a_streaming_response_sends_each_piece_as_it_is_made(make_project: ProjectFactory) -> None:
    async with serve(make_project(STREAMING)) as app, app.client.stream("GET", "/tokens") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert len(r.headers["x-trace-id"]) == 36
        started = time.perf_counter()
        pieces: list[tuple[float, str]] = []
        async for chunk in r.aiter_text():
            pieces.append((time.perf_counter() - started, chunk))
    text = "".join(chunk for _, chunk in pieces)
    assert text == "data: first\n\ndata: second\n\nevent: done\ndata: {}\n\n"
    assert pieces[0][1].startswith("data: first") and pieces[0][0] < 0.5  # before the slow part, not after


async def test_a_model_reply_streams_to_the_client_as_server_sent_events(make_project: ProjectFactory) -> None:
    with ScriptedLLM(Answer("Queues hold the work", pace=0.01)) as llm:
        async with serve(make_project(STREAMING), llm=llm.settings(model="scripted")) as app:
            r = await app.client.get("/chat", params={"q": "a haiku about queues"})
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e]
    assert "".join(e.removeprefix("data: ") for e in events[:-1]) == "Queues hold the work"
    assert len(events) > 2  # piece by piece, not one block
    assert events[-1] == "event: usage\ndata: 4"
    assert llm.requests[0]["stream"] is True


async def test_middleware_runs_in_order_and_can_short_circuit(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/guarded_step.py": """
            calls = []

            async def auth(req, ctx, next):
                if req.headers.get("authorization") != "Bearer s3cret":
                    return {"status": 401, "body": {"error": "unauthorized"}}
                ctx.logger.info("authorized")
                return await next()

            async def timing(req, ctx, next):
                response = await next()
                response["headers"] = {"x-mw": "timing"}
                return response

            config = {"type": "api", "name": "Guarded", "path": "/private", "method": "GET",
                      "middleware": [auth, timing]}

            async def handler(req, ctx):
                return {"status": 200, "body": {"secret": 42}}
        """
        }
    )
    async with serve(root) as app:
        denied = await app.client.get("/private")
        assert denied.status_code == 401 and denied.json() == {"error": "unauthorized"}
        allowed = await app.client.get("/private", headers={"authorization": "Bearer s3cret"})
        assert allowed.json() == {"secret": 42} and allowed.headers["x-mw"] == "timing"
        trace = await app.trace(allowed.headers["x-trace-id"])
        assert any(r.kind == "log" and r.data["message"] == "authorized" for r in trace)


async def test_openapi_is_generated_from_the_api_steps(make_project: ProjectFactory) -> None:
    async with serve(make_project(ORDERS)) as app:
        doc = (await app.client.get("/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    create = doc["paths"]["/orders"]["post"]
    assert create["operationId"] == "CreateOrder"
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewOrder"}
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Order"
    assert doc["components"]["schemas"]["NewOrder"]["required"] == ["item", "quantity"]
    params = doc["paths"]["/shops/{shop}/orders/{orderId}"]["get"]["parameters"]
    assert [p["name"] for p in params] == ["shop", "orderId"]
    search = doc["paths"]["/search"]["get"]["parameters"]
    assert {(p["name"], p["required"]) for p in search} == {("page", True), ("tag", False)}


@pytest.mark.parametrize("dev", [True, False])
async def test_admin_emit_is_open_in_dev_and_token_guarded_in_start(make_project: ProjectFactory, dev: bool) -> None:
    root = make_project(
        {
            "steps/e_step.py": """
            config = {"type": "event", "name": "E", "subscribes": ["ping"]}
            async def handler(input, ctx):
                await ctx.state.set("pings", ctx.trace_id, input)
        """
        }
    )
    async with serve(root, dev=dev, admin_token=None if dev else "tok") as app:
        if not dev:
            assert (await app.client.post("/__stepline/emit", json={"topic": "ping"})).status_code == 401
            headers = {"authorization": "Bearer tok"}
        else:
            headers = {}
        r = await app.client.post("/__stepline/emit", json={"topic": "ping", "data": {"n": 1}}, headers=headers)
        assert r.status_code == 202 and r.json()["subscribers"] == ["E"]
        await app.settle()
        assert await app.state("pings", r.json()["traceId"]) == {"n": 1}
        bad = await app.client.post("/__stepline/emit", json={"data": 1}, headers=headers)
        assert bad.status_code == 400


async def test_admin_api_is_off_in_start_mode_without_a_token(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/e_step.py": 'config = {"type": "event", "name": "E", "subscribes": ["p"]}\n'
            "async def handler(input, ctx): ...\n"
        }
    )
    async with serve(root, dev=False) as app:
        r = await app.client.post("/__stepline/emit", json={"topic": "p"})
        assert r.status_code == 403 and "STEPLINE_ADMIN_TOKEN" in r.json()["error"]


async def test_a_catch_all_step_does_not_shadow_the_built_in_routes(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/any_step.py": """
            config = {"type": "api", "name": "Any", "path": "/{name}", "method": "GET"}
            async def handler(req, ctx):
                return {"status": 200, "body": {"name": req.path_params["name"]}}
        """
        }
    )
    async with serve(root) as app:
        assert (await app.client.get("/__stepline/health")).json()["status"] == "ok"
        assert "paths" in (await app.client.get("/openapi.json")).json()
        assert (await app.client.get("/__private")).json() == {"name": "__private"}  # not a built-in prefix
        assert (await app.client.get("/__stepline/nothing")).status_code == 404
        assert (await app.client.post("/hello")).status_code == 405
