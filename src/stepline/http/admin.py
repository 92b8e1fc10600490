"""The Workbench's JSON API, under /__workbench/api: the graph, traces, logs, state, dead letters, and the
actions a person takes (emit, run a cron step, replay, stop a trace, edit state). Usable on its own.

On in `stepline dev`. In `stepline start` it is off unless an admin token is set, and then every
request must carry it as a bearer token. No CORS headers are sent: the page is served from the same
origin, and another origin cannot read the answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from stepline import _json
from stepline._errors import BacklogFullError, HttpError, SchemaValidationError, StoreError
from stepline.adapters.base import TraceRecord
from stepline.core import durable
from stepline.core.engine import replay_all, resume_trace, stop_trace, stopped
from stepline.core.streams import Hub
from stepline.core.trace import record_json, summary_json
from stepline.http.access import refusal
from stepline.steps.config import ApiConfig, CronConfig, EventConfig
from stepline.steps.graph import as_json, trigger
from stepline.steps.schema import Schema

if TYPE_CHECKING:
    from stepline.core.trace import record_json, summary_json
from stepline.core.engine import Engine

# The admin API (docs/admin-api.md), and the paths it answered at before it was one API: the Workbench's
# own prefix, and three routes the runtime served apart.
PREFIX = "/__stepline/api"
ALIASES = ("/__workbench/api",)
OLD_ROUTES = {
    "/__stepline/emit": "/emit",
    "/__stepline/traces": "/traces",
    "/__stepline/traces/{trace_id}": "/traces/{trace_id}",
}
STATIC = Path(__file__).parent.parent / "_workbench_static"
Endpoint = Callable[[Request], Awaitable[Response]]
BodyReader = Callable[[Request], Awaitable[bytes]]
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status, headers=headers, media_type="application/json"
    )


class WorkbenchApi:
    def __init__(
        self,
        engine: Engine,
        *,
        dev: bool,
        token: str | None,
        read_body: BodyReader,
        streams: Callable[[], Hub | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.hub = streams
        self.dev = dev
        self.token = token
        self.read_body = read_body

    def routes(self) -> list[Route]:
        table: list[tuple[str, Endpoint, str]] = [
            ("/graph", self.graph, "GET"),
            ("/steps/{name}", self.step, "GET"),
            ("/traces", self.traces, "GET"),
            ("/traces/{trace_id}", self.trace, "GET"),
            ("/traces/{trace_id}/stop", self.stop_trace, "POST"),
            ("/traces/{trace_id}/resume", self.resume_trace, "POST"),
            ("/logs", self.logs, "GET"),
            ("/state", self.state_groups, "GET"),
            ("/state/{group}", self.state_group, "GET"),
            ("/state/{group}/{key}", self.state_put, "PUT"),
            ("/state/{group}/{key}", self.state_delete, "DELETE"),
            ("/streams", self.streams, "GET"),
            ("/streams/{stream}/{group}", self.stream_group, "GET"),
            ("/runs", self.runs, "GET"),
            ("/runs/{run_id}", self.run, "GET"),
            ("/runs/{run_id}/cancel", self.cancel_run, "POST"),
            ("/dead-letters", self.dead_letters, "GET"),
            ("/dead-letters/replay", self.replay, "POST"),
            ("/emit", self.emit, "POST"),
            ("/cron/{name}/run", self.run_cron, "POST"),
            ("/live", self.live, "GET"),
        ]
        by_path = {(path, method): endpoint for path, endpoint, method in table}
        self._routes = [
            Route(prefix + path, self._guard(endpoint), methods=[method])
            for prefix in (PREFIX, *ALIASES)
            for path, endpoint, method in table
        ]
        self._routes += [
            Route(old, self._guard(by_path[(new, method)]), methods=[method])
            for old, new in OLD_ROUTES.items()
            for method in ("GET", "POST")
            if (new, method) in by_path
        ]
        return [
            *self._routes,
            *(Route(prefix + "/{rest:path}", self._unknown, methods=list(_METHODS)) for prefix in (PREFIX, *ALIASES)),
        ]

    async def _unknown(self, request: Request) -> Response:
        """404 for a path the API does not have, 405 for a method a path does not take (not the page's 500)."""
        allowed = sorted(
            {m for r in self._routes if r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods or ()}
        )
        if allowed:
            return json_response(
                {"error": f"{request.method} is not allowed here; use {', '.join(allowed)}"},
                405,
                {"allow": ", ".join(allowed)},
            )
        return json_response({"error": f"no such admin API route: {request.method} {request.url.path}"}, 404)

    def _guard(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            refused = self.refuse(request)
            if refused is not None:
                return refused
            try:
                return await endpoint(request)
            except HttpError as exc:
                return json_response({"error": exc.message}, exc.status, exc.headers)
            except StoreError as exc:
                return json_response({"error": f"the store cannot do this now: {exc}"}, 503, {"retry-after": "1"})

        return guarded

    def refuse(self, request: Request) -> Response | None:
        """None if the request may go on; else the 403 or 401 to send."""
        live = request.url.path.endswith("/live")  # EventSource cannot send headers: ?token= there
        return refusal(request, dev=self.dev, token=self.token, what="the admin API", query_token=live)

    def page(self) -> Route | Mount:
        """The page itself, from the files built into the package; a hint when they were not built."""
        if not (STATIC / "index.html").exists():

            async def missing(request: Request) -> Response:
                return Response(
                    "The Workbench page is not in this install of Stepline: install a wheel (it has the page "
                    "inside), or install from source where Node.js is on the PATH (the build makes the page).",
                    404,
                    media_type="text/plain",
                )

            return Route("/__workbench/{rest:path}", missing)
        files = StaticFiles(directory=STATIC, html=True)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if not self.dev and not self.token:
                # Off in start mode without a token; with one, the page loads and asks the API with it.
                await json_response({"error": "the Workbench is off; set STEPLINE_ADMIN_TOKEN"}, 403)(
                    scope, receive, send
                )
                return
            try:
                await files(scope, receive, send)
            except HTTPException as exc:  # a file that is not there (404), a method other than GET (405)
                await Response(exc.detail, exc.status_code, headers=exc.headers, media_type="text/plain")(
                    scope, receive, send
                )

        return Mount("/__workbench", app=app)

    # -- reading ------------------------------------------------------------------------------------

    async def graph(self, request: Request) -> Response:
        return json_response(as_json(self.engine.project, request.query_params.get("flow")))

    async def step(self, request: Request) -> Response:
        step = self.engine.project.steps.get(request.path_params["name"])
        if step is None:
            return json_response({"error": f"no step {request.path_params['name']!r}"}, 404)
        config = step.config
        schemas: dict[str, Any] = {}
        if isinstance(config, ApiConfig):
            if config.body_schema is not None:
                schemas["body"] = config.body_schema.json_schema()
            schemas["responses"] = {str(k): v.json_schema() for k, v in config.response_schema.items()}
        if isinstance(config, EventConfig) and config.input is not None:
            schemas["input"] = config.input.json_schema()
        runs = await self._recent_runs(step.name)
        failed = sum(1 for r in runs if r["status"] != "ok")
        return json_response(
            {
                "name": step.name,
                "type": step.type,
                "trigger": trigger(step),
                "file": str(step.file),
                "description": config.description,
                "flows": step.flows,
                "config": _plain(config.model_dump(by_alias=True)),
                "schemas": schemas,
                "recentRuns": runs,
                "errorRate": failed / len(runs) if runs else None,
            }
        )

    async def _recent_runs(self, step: str, traces: int = 100) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        for summary in await self.engine.traces.recent(traces):
            for r in await self.engine.traces.trace(summary.trace_id):
                if r.kind == "end" and r.step == step:
                    runs.append(
                        {
                            "traceId": r.trace_id,
                            "ts": r.ts,
                            **{k: r.data.get(k) for k in ("status", "duration_ms", "error")},
                        }
                    )
        return sorted(runs, key=lambda r: r["ts"], reverse=True)[:50]

    async def traces(self, request: Request) -> Response:
        await self.engine.flush()
        limit = _int(request, "limit", 50)
        return json_response([summary_json(s) for s in await self.engine.traces.recent(limit)])

    async def trace(self, request: Request) -> Response:
        await self.engine.flush()
        records = await self.engine.traces.trace(request.path_params["trace_id"])
        if not records:
            return json_response({"error": "no such trace"}, 404)
        is_stopped = await stopped(self.engine.control, request.path_params["trace_id"])
        return json_response({"stopped": is_stopped, "records": [record_json(r) for r in records]})

    async def logs(self, request: Request) -> Response:
        """Log records of recent traces, newest last; filter by trace, step, level and text."""
        await self.engine.flush()
        q = request.query_params
        trace_ids = (
            [q["trace"]]
            if q.get("trace")
            else [s.trace_id for s in await self.engine.traces.recent(_int(request, "traces", 100))]
        )
        level, step, text = q.get("level"), q.get("step"), (q.get("text") or "").lower()
        found = []
        for trace_id in trace_ids:
            for r in await self.engine.traces.trace(trace_id):
                if r.kind != "log" or (step and r.step != step) or (level and r.data.get("level") != level):
                    continue
                if (
                    text
                    and text not in str(r.data.get("message", "")).lower()
                    and text not in orjson.dumps(r.data.get("fields")).decode().lower()
                ):
                    continue
                found.append(record_json(r))
        found.sort(key=lambda r: r["ts"])
        return json_response(found[-_int(request, "limit", 500) :])

    async def state_groups(self, request: Request) -> Response:
        return json_response(await self.engine.state.groups())

    async def state_group(self, request: Request) -> Response:
        return json_response(await self.engine.state.get_group(request.path_params["group"]))

    async def streams(self, request: Request) -> Response:
        """Every stream: its schema, its groups (items, number) and who watches them in this process."""
        hub = self.hub()
        if hub is None:
            return json_response([])
        watched: dict[tuple[str, str], int] = {(s, g): n for s, g, n in hub.watched()}
        out = []
        for name, stream in sorted(hub.streams.items()):
            groups = await hub.store.groups(name)
            out.append(
                {
                    "name": name,
                    "file": stream.rel,
                    "description": stream.description,
                    "schema": stream.schema.json_schema() if stream.schema is not None else None,
                    "access": "checked" if stream.can_access is not None else "open",
                    "groups": [
                        {"group": g, "items": n, "seq": seq, "watchers": watched.get((name, g), 0)}
                        for g, n, seq in groups
                    ],
                }
            )
        return json_response(out)

    async def stream_group(self, request: Request) -> Response:
        hub = self.hub()
        name, group = request.path_params["stream"], request.path_params["group"]
        if hub is None or name not in hub.streams:
            return json_response({"error": f"there is no stream {name!r}"}, 404)
        items, seq = await hub.store.snapshot(name, group)
        return json_response({"stream": name, "group": group, "seq": seq, "items": list(items.values())})

    async def dead_letters(self, request: Request) -> Response:
        dead = await self.engine.queue.dead_letters(_int(request, "limit", 200))
        return json_response([d.to_dict() for d in dead])

    async def runs(self, request: Request) -> Response:
        """The durable runs (with a journal), oldest first; `?suspended=1` for the suspended ones only."""
        found = await durable.runs(self.engine.control)
        if request.query_params.get("suspended") in ("1", "true"):
            found = [r for r in found if r.get("status") == "suspended"]
        return json_response(found[: _int(request, "limit", 1000)])

    async def run(self, request: Request) -> Response:
        found = await durable.run_details(self.engine.control, request.path_params["run_id"])
        if found is None:
            return json_response({"error": "no durable run with that id: it finished, or never recorded a step"}, 404)
        return json_response(found)

    async def cancel_run(self, request: Request) -> Response:
        body = await self._json_body(request, allow_empty=True)
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        run_id = request.path_params["run_id"]
        engine = self.engine
        if not await durable.cancel_run(engine.control, engine.queue, run_id, reason or "cancelled", engine.clock):
            return json_response({"error": "no run with that id is in the queue"}, 404)
        return json_response({"cancelling": run_id}, 202)

    async def live(self, request: Request) -> Response:
        """Server-sent events: every trace record as it is written, in batches at most 4 times a second."""
        queue: asyncio.Queue[TraceRecord] = asyncio.Queue(maxsize=10_000)
        unsubscribe = self.engine.subscribe(queue)

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b": connected\n\n"
                while True:
                    try:
                        first = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    batch = [first]
                    await asyncio.sleep(0.25)
                    while not queue.empty():
                        batch.append(queue.get_nowait())
                    yield b"data: " + orjson.dumps([record_json(r) for r in batch]) + b"\n\n"
            finally:
                unsubscribe()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    # -- acting -------------------------------------------------------------------------------------

    async def state_put(self, request: Request) -> Response:
        try:
            value = _json.parse(await self.read_body(request), "the new value")
        except SchemaValidationError as exc:
            return json_response({"error": f"the body must be the new value, as JSON: {exc}"}, 400)
        group, key = request.path_params["group"], request.path_params["key"]
        await self.engine.state.set(group, key, value)
        return json_response({"group": group, "key": key, "value": value})

    async def state_delete(self, request: Request) -> Response:
        if not await self.engine.state.delete(request.path_params["group"], request.path_params["key"]):
            return json_response({"error": "no such value"}, 404)
        return Response(status_code=204)

    async def replay(self, request: Request) -> Response:
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        ids = body.get("ids") if isinstance(body, dict) else None
        if ids is None and not (isinstance(body, dict) and body.get("all")):
            return json_response({"error": 'send {"ids": [...]} or {"all": true}'}, 400)
        if ids is None:
            replayed = await replay_all(self.engine.queue)
        elif not isinstance(ids, list):
            return json_response({"error": '"ids" is a list of dead letter ids'}, 400)
        else:
            replayed = [str(i) for i in ids if await self.engine.queue.replay(str(i))]
        return json_response({"replayed": len(replayed), "ids": replayed})

    async def emit(self, request: Request) -> Response:
        return await emit_request(self.engine, request, self.read_body)

    async def run_cron(self, request: Request) -> Response:
        found = self.engine.project.steps.get(request.path_params["name"])
        step = found.of(CronConfig) if found is not None else None
        if step is None:
            return json_response({"error": f"no cron step {request.path_params['name']!r}"}, 404)
        trace_id = await self.engine.run_cron(step)
        return json_response({"traceId": trace_id}, 202)

    async def _json_body(self, request: Request, allow_empty: bool = False) -> Any:
        """The JSON body, or the 400 to answer with."""
        raw = await self.read_body(request)
        if not raw and allow_empty:
            return {}
        try:
            return _json.parse(raw, "the body")
        except SchemaValidationError as exc:
            return json_response({"error": str(exc)}, 400)

    async def stop_trace(self, request: Request) -> Response:
        body = await self._json_body(request, allow_empty=True)
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        await stop_trace(self.engine.control, request.path_params["trace_id"], reason, self.engine.clock)
        return json_response({"stopped": request.path_params["trace_id"]})

    async def resume_trace(self, request: Request) -> Response:
        if not await resume_trace(self.engine.control, request.path_params["trace_id"]):
            return json_response({"error": "that trace was not stopped"}, 404)
        return json_response({"resumed": request.path_params["trace_id"]})


async def emit_request(engine: Engine, request: Request, read_body: BodyReader) -> Response:
    """`{"topic", "data"}` emitted from outside any step (the admin API and the Workbench both take it).

    202 once the event is accepted; 503 when the store cannot take it (then it was not)."""
    try:
        payload = _json.parse(await read_body(request), "the body")
    except HttpError as exc:
        return json_response({"error": exc.message}, exc.status, exc.headers)
    except SchemaValidationError as exc:
        return json_response({"error": str(exc)}, 400)
    if not isinstance(payload, dict) or not isinstance(payload.get("topic"), str) or not payload["topic"]:
        return json_response({"error": 'send {"topic": "...", "data": ...}'}, 400)
    try:
        event = await engine.emit_external(payload["topic"], payload.get("data"))
    except BacklogFullError as exc:
        return json_response({"error": f"the event was not queued: {exc}"}, 503, {"retry-after": str(exc.retry_after)})
    except StoreError as exc:
        return json_response({"error": f"the event was not stored: {exc}"}, 503, {"retry-after": "1"})
    subscribers = [s.name for s in engine.project.subscribers(event.topic)]
    return json_response({"traceId": event.trace_id, "eventId": event.id, "subscribers": subscribers}, 202)


def _plain(value: Any) -> Any:
    """A step config as JSON: schemas as JSON Schema, functions (middleware) by name."""
    if isinstance(value, Schema):
        return value.json_schema()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return value


def _int(request: Request, name: str, default: int) -> int:
    try:
        return max(1, min(int(request.query_params.get(name, default)), 10_000))
    except ValueError:
        raise HttpError(400, f"{name} is a whole number, like {name}={default}") from None
