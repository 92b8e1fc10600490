"""The ASGI side: API steps as Starlette routes, /openapi.json, health, and the small admin API of the CLI.

What a request may cost is bounded here: a body larger than `max_body` is refused with 413 before it
is read whole, one that trickles in slower than `body_timeout` with 408, a body schema takes JSON only
(415 otherwise), a malformed `multipart/form-data` body is a 400 with the reason, and JSON that no
store could keep exactly (integers beyond 64 bits) or that nests deeper than validators can recurse is
a 400 that names the place. A large body is parsed and validated off the event loop, and an error
report is capped, so that one request never stalls the others.

CORS (`cors=`, or the `cors` attribute) applies to the project's routes only, never to Stepline's own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from stepline import _json
from stepline._errors import (
    BacklogFullError,
    FieldError,
    HttpError,
    SchemaValidationError,
    StoreCorruptError,
    StoreError,
)
from stepline._ids import new_id
from stepline.core import trace as tr
from stepline.core.engine import Engine, clip
from stepline.http.admin import WorkbenchApi, json_response
from stepline.http.body import read_body
from stepline.http.connections import MAX_REQUESTS
from stepline.http.cors import Cors, CorsOptions
from stepline.http.multipart import is_multipart, parse_multipart
from stepline.http.openapi import openapi
from stepline.http.streams import SOCKET_PATHS, StreamEndpoints
from stepline.steps.config import ApiConfig
from stepline.steps.loader import RESERVED_PREFIXES
from stepline.steps.project import Project, Step
from stepline.steps.request import ApiRequest, unpack_result
from stepline.steps.schema import MAX_ERRORS

log = logging.getLogger("stepline.http")

Lifespan = Callable[[], Awaitable[None]]

MAX_BODY = 1024 * 1024  # bytes; Stepline(max_body=...), --max-body
BODY_TIMEOUT = 30.0  # seconds for the whole body to arrive once the headers have
_OFF_LOOP = 64 * 1024  # bodies larger than this are parsed and validated on a thread
_HEALTH_TIMEOUT = 2.0
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Built-in routes a load balancer or a monitor calls with whatever Host it likes; and the streams, which
# pages elsewhere watch (their own authenticate hook and access checks guard them, not the Host).
_STREAMS = "/__stepline/streams"
_OPEN = ("/__stepline/health", "/__stepline/live", "/openapi.json", _STREAMS)


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
        max_body: int = MAX_BODY,
        body_timeout: float = BODY_TIMEOUT,
        allowed_hosts: list[str] | None = None,
        routes: bool = True,
        streams: StreamEndpoints | None = None,
        cors: CorsOptions | None = None,
    ) -> None:
        self.engine = engine
        self.dev = dev
        # False in a worker process (`stepline start --role worker`): it answers health checks, nothing else.
        self.routes = routes
        self.admin_token = admin_token
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.max_body = max_body
        self.body_timeout = body_timeout
        # Host names the built-in routes answer to without a token, besides localhost and IP addresses.
        self.allowed_hosts = {h.lower() for h in allowed_hosts or []}
        self.streams = streams if routes else None
        self.max_requests = MAX_REQUESTS
        self._in_flight = 0
        self._builtin = self._build_builtin()
        self._router = self._build(engine.project)
        self.cors = cors

    @property
    def cors(self) -> CorsOptions | None:
        """Which other sites' pages may call the API steps from a browser (None: none may).

        Settable while the app serves: the next request follows the new options. Options allowing no
        origin act as None (no CORS headers; a preflight goes to the routes and gets their 405)."""
        return self._cors_options

    @cors.setter
    def cors(self, options: CorsOptions | None) -> None:
        self._cors_options = options
        self._cors: Cors | None = None
        # A worker process serves no API route: nothing for a page elsewhere to call, nothing to answer.
        if options is not None and options.allow_origins and self.routes:
            self._cors = Cors(options)

    def set_project(self, project: Project) -> None:
        self._router = self._build(project)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            if self.streams is not None and _route_path(scope) in SOCKET_PATHS:
                await self.streams.websocket(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": "no WebSocket here; streams: /"})
            return
        path = _route_path(scope)
        # Requests in flight are bounded here; SSE watchers are stream connections, bounded as those.
        counted = not path.startswith(_STREAMS)
        if counted:
            if self._in_flight >= self.max_requests:
                busy = f"Service Unavailable: {self.max_requests:,} requests are in flight here; try again"
                await json_response({"error": busy}, 503, {"retry-after": "1"})(scope, receive, send)
                return
            self._in_flight += 1
        try:
            # Steps cannot use the built-in routes' prefixes (the loader refuses them), so a step's request
            # need not walk past two dozen built-in routes first.
            if path.startswith(RESERVED_PREFIXES):
                refused = self._cross_site(scope) if not path.startswith(_OPEN) else None
                if refused is not None:
                    await json_response({"error": refused}, 403)(scope, receive, send)
                    return
                await self._builtin(scope, receive, send)
                return
            if self._cors is not None:  # the project's routes only: Stepline's own never answer other sites
                await self._cors(scope, receive, send, self._router)
            else:
                await self._router(scope, receive, send)
        finally:
            if counted:
                self._in_flight -= 1

    def _cross_site(self, scope: Scope) -> str | None:
        """Why a request to the admin API or the Workbench is refused as coming from another site, if it is.

        Without a token (dev), anyone who can reach the port may use them, so a web page must not: a
        foreign Host is DNS rebinding (a page whose domain now resolves to this machine), and a foreign
        Origin on a POST is a cross-site form or fetch. With a token, the token is the guard (a browser
        never sends it on its own), and a proxy in front may send any Host."""
        headers = {k: v for k, v in scope.get("headers", []) if k in (b"host", b"origin", b"sec-fetch-site")}
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if not self.admin_token and not self._host_allowed(host):
            return (
                f"the Host {host!r} is not this machine's: Stepline's own routes answer only to localhost, IP "
                "addresses and the names given with --allowed-host (or STEPLINE_ALLOWED_HOSTS)"
            )
        if scope.get("method") in _UNSAFE:
            origin = headers.get(b"origin", b"").decode("latin-1").lower()
            if origin and origin != "null" and urlsplit(origin).netloc != host:
                return f"a request from another origin ({origin}) may not act here; send it from {host}"
            if origin == "null" or headers.get(b"sec-fetch-site") == b"cross-site":
                return "a cross-site request may not act here"
        return None

    def _host_allowed(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]")
        if name in ("localhost", "") or name.endswith(".localhost") or name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)  # a page's DNS-rebound domain is a name, never an address
        except ValueError:
            return False
        return True

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
        health = [
            Route("/__stepline/health", self._health, methods=["GET"]),
            Route("/__stepline/live", self._live, methods=["GET"]),
        ]
        if not self.routes:
            return Router(health)
        hub = self.streams.hub if self.streams is not None else (lambda: None)
        workbench = WorkbenchApi(
            self.engine, dev=self.dev, token=self.admin_token, read_body=self.read_body, streams=hub
        )
        streams: list[BaseRoute] = []
        if self.streams is not None:
            streams = [
                Route("/__stepline/streams/client.js", self.streams.client_js, methods=["GET"]),
                Route("/__stepline/streams/{stream}/{group}", self.streams.sse, methods=["GET"]),
                Route("/__stepline/streams/{stream}/{group}/{id}", self.streams.sse, methods=["GET"]),
            ]
        return Router(
            [
                Route("/openapi.json", self._openapi, methods=["GET"]),
                *health,
                *streams,
                *workbench.routes(),
                workbench.page(),
            ]
        )

    def _build(self, project: Project) -> Router:
        routes: list[BaseRoute] = []
        if not self.routes:
            return Router(routes)
        for step in project.api_steps:
            routes.append(Route(step.config.path, self._endpoint(step), methods=[step.config.method], name=step.name))
        return Router(routes)

    def _endpoint(self, step: Step[ApiConfig]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._handle(step, request)

        return endpoint

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with HttpError past `max_body` bytes (413) or `body_timeout` seconds (408)."""
        return await read_body(request, self.max_body, self.body_timeout)

    async def _handle(self, step: Step[ApiConfig], request: Request) -> Response:
        config = step.config
        trace_id = new_id()
        try:
            raw = await self.read_body(request)
            if len(raw) > _OFF_LOOP:
                api_request = await asyncio.to_thread(_api_request, request, raw, config)
            else:
                api_request = _api_request(request, raw, config)
        except HttpError as exc:
            return json_response({"error": exc.message, "traceId": trace_id}, exc.status, exc.headers | _tid(trace_id))
        except SchemaValidationError as exc:
            self._record_rejection(step, request, trace_id, exc)
            body: dict[str, Any] = {
                "error": f"{exc.what} is invalid",
                "errors": [e.to_dict() for e in exc.errors[:MAX_ERRORS]],
                "traceId": trace_id,
            }
            if len(exc.errors) > MAX_ERRORS:
                body["more"] = "there are more errors; fix these first"
            return json_response(body, 400, _tid(trace_id))
        try:
            result = await self.engine.call_api(step, api_request, trace_id)
        except BacklogFullError as exc:  # the workers are behind: push back on the caller, queue nothing
            full = {"error": f"Service Unavailable: {exc}", "traceId": trace_id}
            return json_response(full, 503, {"retry-after": str(exc.retry_after)} | _tid(trace_id))
        except StoreError as exc:
            # Nothing the handler tried to store (an emit above all) was accepted: say so, never 202.
            now = (
                "is damaged and cannot take this request"
                if isinstance(exc, StoreCorruptError)
                else ("cannot take this request now; try again")
            )
            unavailable: dict[str, Any] = {
                "error": f"Service Unavailable: the store {now}",
                "reason": str(exc) if self.dev else exc.reason,
                "traceId": trace_id,
            }
            retry = {} if isinstance(exc, StoreCorruptError) else {"retry-after": "1"}
            return json_response(unavailable, 503, retry | _tid(trace_id))
        except Exception as exc:
            problem: dict[str, Any] = {"error": "Internal Server Error", "traceId": trace_id}
            if self.dev:
                problem["detail"] = clip(f"{type(exc).__name__}: {exc}", 2000)
            return json_response(problem, 500, _tid(trace_id))
        return self._to_response(step, result, trace_id)

    def _record_rejection(self, step: Step, request: Request, trace_id: str, exc: SchemaValidationError) -> None:
        now = self.engine.clock.time()
        entry = f"{request.method} {request.scope['path']}"
        self.engine.record(tr.trigger(trace_id, step.name, now, entry, type="api"))
        errors = [e.to_dict() for e in exc.errors[:MAX_ERRORS]]
        self.engine.record(
            tr.end(trace_id, step.name, now, {}, "error", 0.0, http_status=400, error=clip(str(exc)), errors=errors)
        )

    def _to_response(self, step: Step[ApiConfig], result: Any, trace_id: str) -> Response:
        if isinstance(result, Response):
            result.headers["x-trace-id"] = trace_id
            return result
        status, body, headers = unpack_result(result)
        headers["x-trace-id"] = trace_id
        schema = step.config.response_schema.get(status)
        if schema is not None:
            try:
                body = schema.validate(body, f"the response body of {step.name!r} for status {status}")
            except SchemaValidationError as exc:
                log.error("%s", clip(str(exc)), extra={"trace_id": trace_id, "step": step.name})
                return self._server_error(trace_id, str(exc))
        if body is None:
            return Response(status_code=status, headers=headers)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if isinstance(body, str | bytes) and content_type and "json" not in content_type:
            return Response(body, status, headers=headers)
        try:
            return json_response(body, status, headers)
        except TypeError as exc:  # orjson: not JSON
            message = f"step {step.name!r} returned a body that is not JSON ({exc}); return dicts, lists and scalars"
            log.error("%s", message, extra={"trace_id": trace_id, "step": step.name})
            return self._server_error(trace_id, message)

    def _server_error(self, trace_id: str, detail: str) -> Response:
        problem: dict[str, Any] = {"error": "Internal Server Error", "traceId": trace_id}
        if self.dev:
            problem["detail"] = clip(detail, 2000)
        return json_response(problem, 500, _tid(trace_id))

    # -- built-in endpoints ------------------------------------------------------------------------

    async def _openapi(self, request: Request) -> Response:
        return json_response(openapi(self.engine.project))

    async def _live(self, request: Request) -> Response:
        """Liveness: the process answers. Whether it can do its work is /__stepline/health."""
        return json_response({"status": "ok"})

    async def _health(self, request: Request) -> Response:
        """Readiness: 200 while everything works, 503 with the problems while a background loop fails."""
        problems = [p.to_dict() for p in self.engine.health.problems()]
        queue: dict[str, int] | None = None
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT):
                stats = await self.engine.queue.stats()
            queue = {"ready": stats.ready, "delayed": stats.delayed, "in_flight": stats.in_flight, "dead": stats.dead}
        except Exception as exc:
            reason = "it did not answer within 2 s" if isinstance(exc, TimeoutError) else str(exc)
            problems.append({"component": "store", "error": f"the store cannot be read: {reason}", "fix": ""})
        body: dict[str, Any] = {
            "status": "failing" if problems else "ok",
            "role": ("all" if self.engine.consume else "api") if self.routes else "worker",
            "steps": len(self.engine.project.steps),
            "queue": queue,
            "abandoned_threads": self.engine.abandoned_threads,
        }
        if problems:
            body["problems"] = problems
        return json_response(body, 503 if problems else 200)


def _tid(trace_id: str) -> dict[str, str]:
    return {"x-trace-id": trace_id}


def _route_path(scope: Scope) -> str:
    """The path below the mount point, as routing sees it (a mounted app's scope path includes its prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


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
        body_bytes=raw,
    )


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _parse_body(request: Request, raw: bytes, want_json: bool) -> Any:
    if not raw:
        return None
    content_type = request.headers.get("content-type", "")
    if want_json:
        # A body schema takes JSON only. Text sent as JSON is how a page on another site posts here (a
        # text/plain form, or fetch with no content type, needs no CORS preflight).
        if not is_json(content_type):
            got = f"Content-Type {content_type}" if content_type else "no Content-Type"
            raise HttpError(415, f"the body must be JSON, sent with Content-Type: application/json (got {got})")
        return _json.parse(raw, "the request body")
    if is_multipart(content_type):
        return parse_multipart(raw, content_type)
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    if is_json(content_type):
        return _json.parse(raw, "the request body")
    if not content_type:
        try:
            return _json.parse(raw, "the request body")
        except SchemaValidationError:
            pass  # without a schema or a content type, a body that is not JSON is text
    return raw.decode("utf-8", errors="replace")
