"""Mounting a Stepline project inside an existing Starlette (or FastAPI) app."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from pathlib import Path

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


def test_an_app_module_at_the_project_root_can_load_its_own_project(tmp_path: Path) -> None:
    """`uvicorn main:app` with main.py beside steps/: loading the project while main is being imported
    must not drop main from sys.modules (its import failed with KeyError: 'main')."""
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "hello_step.py").write_text(
        'config = {"type": "api", "name": "Hello", "path": "/hello", "method": "GET"}\n'
        "async def handler(req, ctx):\n    return {}\n"
    )
    (tmp_path / "mainapp.py").write_text(
        f"from stepline import Stepline\nsteps = Stepline({str(tmp_path)!r}, store='memory://')\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("mainapp")
        assert "Hello" in module.steps.project.steps
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mainapp", None)
