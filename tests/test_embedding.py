"""Mounting a Stepline project inside an existing Starlette (or FastAPI) app."""

from __future__ import annotations

import asyncio
import contextlib

import httpx2 as httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from stepline import Stepline
from stepline.http.server import bind

from .conftest import ProjectFactory


async def test_mounted_under_a_prefix_with_the_host_apps_lifespan(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/ping_step.py": """
            config = {"type": "api", "name": "Ping", "path": "/ping/{who}", "method": "POST", "emits": ["pinged"]}
            async def handler(req, ctx):
                await ctx.emit("pinged", {"who": req.path_params["who"]})
                return {"status": 202, "body": {"traceId": ctx.trace_id}}
        """,
            "steps/pong_step.py": """
            config = {"type": "event", "name": "Pong", "subscribes": ["pinged"]}
            async def handler(input, ctx):
                await ctx.state.set("pongs", input["who"], ctx.trace_id)
        """,
        }
    )
    steps = Stepline(root)

    async def home(request: object) -> JSONResponse:
        return JSONResponse({"app": "host"})

    host = Starlette(routes=[Route("/", home), Mount("/steps", app=steps.asgi)], lifespan=steps.lifespan)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(host, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/")).json() == {"app": "host"}
            r = await client.post("/steps/ping/ana")
            assert r.status_code == 202
            await steps.settle()
            assert await steps.engine.state.get("pongs", "ana") == r.json()["traceId"]
            assert "/ping/{who}" in (await client.get("/steps/openapi.json")).json()["paths"]
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
