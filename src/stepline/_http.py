"""The ASGI side: API steps as Starlette routes, /openapi.json, and the small admin API of the CLI."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from ._access import refusal
from ._config import ApiConfig
from ._engine import Engine
from ._errors import FieldError, SchemaValidationError
from ._ids import new_id
from ._loader import RESERVED_PREFIXES
from ._openapi import openapi
from ._project import Project, Step
from ._protocols import TraceRecord
from ._request import ApiRequest, unpack_result
from ._workbench_api import WorkbenchApi, emit_request

log = logging.getLogger("stepline.http")

Lifespan = Callable[[], Awaitable[None]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status, headers=headers, media_type="application/json"
    )


class HttpApp:
    """An ASGI app whose routes follow the project: a reload swaps the router, requests in flight finish.

    Mountable in any Starlette or FastAPI app; run on its own, it starts and stops the runtime through
    the ASGI lifespan (`on_startup` / `on_shutdown`)."""

    def __init__(
        self,
        engine: Engine,
        *,
        dev: bool,
        admin_token: str | None = None,
        on_startup: Lifespan | None = None,
        on_shutdown: Lifespan | None = None,
    ) -> None:
        self.engine = engine
        self.dev = dev
        self.admin_token = admin_token
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self._builtin = self._build_builtin()
        self._router = self._build(engine.project)

    def set_project(self, project: Project) -> None:
        self._router = self._build(project)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        # Steps cannot use the built-in routes' prefixes (the loader refuses them), so a step's request
        # need not walk past two dozen built-in routes first.
        builtin = _route_path(scope).startswith(RESERVED_PREFIXES)
        await (self._builtin if builtin else self._router)(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.on_startup:
                        await self.on_startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown:
                    await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routes ----------------------------------------------------------------------------------

    def _build_builtin(self) -> Router:
        workbench = WorkbenchApi(self.engine, dev=self.dev, token=self.admin_token)
        return Router(
            [
                Route("/openapi.json", self._openapi, methods=["GET"]),
                Route("/__stepline/health", self._health, methods=["GET"]),
                Route("/__stepline/emit", self._admin(self._emit), methods=["POST"]),
                Route("/__stepline/traces", self._admin(self._traces), methods=["GET"]),
                Route("/__stepline/traces/{trace_id}", self._admin(self._trace), methods=["GET"]),
                *workbench.routes(),
                workbench.page(),
            ]
        )

    def _build(self, project: Project) -> Router:
        routes = []
        for step in project.api_steps:
            assert isinstance(step.config, ApiConfig)
            routes.append(Route(step.config.path, self._endpoint(step), methods=[step.config.method], name=step.name))
        return Router(routes)

    def _endpoint(self, step: Step) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._handle(step, request)

        return endpoint

    async def _handle(self, step: Step, request: Request) -> Response:
        config = step.config
        assert isinstance(config, ApiConfig)
        trace_id = new_id()
        raw = await request.body()
        try:
            api_request = _api_request(request, raw, config)
        except SchemaValidationError as exc:
            self._record_rejection(step, request, trace_id, exc)
            return json_response(
                {"error": f"{exc.what} is invalid", "errors": [e.to_dict() for e in exc.errors], "traceId": trace_id},
                400,
                {"x-trace-id": trace_id},
            )
        try:
            result = await self.engine.call_api(step, api_request, trace_id)
        except Exception as exc:
            body: dict[str, Any] = {"error": "Internal Server Error", "traceId": trace_id}
            if self.dev:
                body["detail"] = f"{type(exc).__name__}: {exc}"
            return json_response(body, 500, {"x-trace-id": trace_id})
        return self._to_response(step, result, trace_id)

    def _record_rejection(self, step: Step, request: Request, trace_id: str, exc: SchemaValidationError) -> None:
        now = time.time()
        self.engine.record(
            TraceRecord(
                trace_id,
                "trigger",
                step.name,
                now,
                {"entry": f"{request.method} {request.scope['path']}", "type": "api"},
            )
        )
        self.engine.record(
            TraceRecord(
                trace_id,
                "end",
                step.name,
                now,
                {
                    "status": "error",
                    "http_status": 400,
                    "duration_ms": 0.0,
                    "error": str(exc),
                    "errors": [e.to_dict() for e in exc.errors],
                },
            )
        )

    def _to_response(self, step: Step, result: Any, trace_id: str) -> Response:
        if isinstance(result, Response):
            result.headers["x-trace-id"] = trace_id
            return result
        status, body, headers = unpack_result(result)
        headers["x-trace-id"] = trace_id
        assert isinstance(step.config, ApiConfig)
        schema = step.config.response_schema.get(status)
        if schema is not None:
            try:
                body = schema.validate(body, f"the response body of {step.name!r} for status {status}")
            except SchemaValidationError as exc:
                log.error("%s", exc, extra={"trace_id": trace_id, "step": step.name})
                problem: dict[str, Any] = {"error": "Internal Server Error", "traceId": trace_id}
                if self.dev:
                    problem["detail"] = str(exc)
                return json_response(problem, 500, {"x-trace-id": trace_id})
        if body is None:
            return Response(status_code=status, headers=headers)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if isinstance(body, str | bytes) and content_type and "json" not in content_type:
            return Response(body, status, headers=headers)
        return json_response(body, status, headers)

    # -- built-in endpoints ------------------------------------------------------------------------

    async def _openapi(self, request: Request) -> Response:
        return json_response(openapi(self.engine.project))

    async def _health(self, request: Request) -> Response:
        stats = await self.engine.queue.stats()
        return json_response(
            {
                "status": "ok",
                "steps": len(self.engine.project.steps),
                "queue": {
                    "ready": stats.ready,
                    "delayed": stats.delayed,
                    "in_flight": stats.in_flight,
                    "dead": stats.dead,
                },
            }
        )

    def _admin(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """The admin API is open in dev; in start mode it needs a configured token, sent as a bearer token."""

        async def guarded(request: Request) -> Response:
            refused = refusal(request, dev=self.dev, token=self.admin_token, what="the admin API")
            return refused if refused is not None else await endpoint(request)

        return guarded

    async def _emit(self, request: Request) -> Response:
        return await emit_request(self.engine, request)

    async def _traces(self, request: Request) -> Response:
        await self.engine.flush()
        limit = int(request.query_params.get("limit", "50"))
        return json_response([_summary(s) for s in await self.engine.traces.recent(limit)])

    async def _trace(self, request: Request) -> Response:
        await self.engine.flush()
        records = await self.engine.traces.trace(request.path_params["trace_id"])
        if not records:
            return json_response({"error": "no such trace"}, 404)
        return json_response(
            [{"trace_id": r.trace_id, "kind": r.kind, "step": r.step, "ts": r.ts, "data": r.data} for r in records]
        )


def _route_path(scope: Scope) -> str:
    """The path below the mount point, as routing sees it (a mounted app's scope path includes its prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def _summary(s: Any) -> dict[str, Any]:
    return {
        "trace_id": s.trace_id,
        "entry": s.entry,
        "started_at": s.started_at,
        "last_at": s.last_at,
        "records": s.records,
        "errors": s.errors,
    }


def _api_request(request: Request, raw: bytes, config: ApiConfig) -> ApiRequest:
    body = _parse_body(request, raw, config.body_schema is not None)
    if config.body_schema is not None:
        if body is None:
            raise SchemaValidationError("the request body", [FieldError("", "a JSON body is required")])
        body = config.body_schema.validate(body, "the request body")
    query: dict[str, Any] = {}
    if request.scope["query_string"]:
        for key in request.query_params:
            values = request.query_params.getlist(key)
            query[key] = values[0] if len(values) == 1 else values
    if config.query_params is not None and not isinstance(config.query_params, list):
        query = config.query_params.validate(config.query_params.coerce_strings(query), "the query string")
    elif isinstance(config.query_params, list):
        missing = [q.name for q in config.query_params if q.required and q.name not in query]
        if missing:
            raise SchemaValidationError(
                "the query string", [FieldError(m, "this query parameter is required") for m in missing]
            )
    return ApiRequest(
        body=body,
        path_params=dict(request.path_params),
        query_params=query,
        headers=dict(request.headers.items()),  # ASGI header names are lower-case already
        raw_body=raw.decode("utf-8", errors="replace"),
        method=request.method,
        path=request.scope["path"],
    )


def _parse_body(request: Request, raw: bytes, want_json: bool) -> Any:
    if not raw:
        return None
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded") and not want_json:
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    if "json" in content_type or not content_type or want_json:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if want_json or "json" in content_type:
                raise SchemaValidationError("the request body", [FieldError("", f"not valid JSON: {exc}")]) from None
    return raw.decode("utf-8", errors="replace")
