"""CORS for the project's API steps: which other sites' pages may call them from a browser.

Applied by the HTTP app to the project's routes only. Stepline's own routes (`/__stepline`, the
Workbench) never answer a cross-origin browser request with CORS headers: a page on another site must
not drive the admin API, whatever the project allows for its own endpoints.

Written here rather than taken from Starlette's CORSMiddleware so that an origin the options do not allow
gets no CORS header at all (Starlette sends it the policy's methods and headers, and a preflight refusal
with them), and so that the one dangerous combination, any origin with credentials, is refused when the
options are made instead of being answered by echoing whatever origin asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepline.http.admin import json_response

# Headers a page may always send (the CORS safelist): a preflight asks for Content-Type whenever it is JSON,
# and refusing it would refuse every JSON call of a policy that lists only, say, Authorization.
_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})


def _any() -> list[str]:
    return ["*"]


def _exposed() -> list[str]:
    return ["x-trace-id"]


@dataclass(frozen=True)
class CorsOptions:
    """Which origins may call the API steps from a browser, and with what.

    `allow_origins`: origins as a browser sends them (`https://app.example.com`, a port when it is not the
    scheme's), or `"*"` for any; an empty list allows none (the app then adds nothing at all).
    `allow_methods`, `allow_headers`: what a preflight may ask for; `"*"` (the default) allows whatever it
    asks. `allow_credentials`: whether the page may send cookies or HTTP authentication (not with `"*"`).
    `expose_headers`: response headers the page's script may read besides the simple ones (the trace id
    by default). `max_age`: seconds a browser may cache a preflight's answer."""

    allow_origins: list[str]
    allow_methods: list[str] = field(default_factory=_any)
    allow_headers: list[str] = field(default_factory=_any)
    allow_credentials: bool = False
    expose_headers: list[str] = field(default_factory=_exposed)
    max_age: int = 600

    def __post_init__(self) -> None:
        for origin in self.allow_origins:
            if origin != "*" and not _is_origin(origin.rstrip("/")):
                raise ValueError(
                    f"{origin!r} is not an origin: write it as a browser sends it, scheme and host (and a port "
                    'if it is not the usual one), like "https://app.example.com", or "*" for any'
                )
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                'allow_credentials with "*" would let every site act with its visitors\' cookies: list the origins'
            )
        if self.max_age < 0:
            raise ValueError(f"max_age is seconds, 0 or more, not {self.max_age}")


def _is_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 (reading it checks it: a port that is not a number raises)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc) and not (parts.path or parts.query or parts.fragment)


class Cors:
    """Answers preflights and adds CORS headers to the responses of the app it is handed on each call."""

    def __init__(self, options: CorsOptions) -> None:
        self.options = options
        # Copied and normalised once: options hold lists, and a list changed later must not change the policy.
        self._origins = frozenset(o.rstrip("/").lower() for o in options.allow_origins)
        self._any_origin = "*" in self._origins
        self._methods = frozenset(m.upper() for m in options.allow_methods)
        self._headers = _SAFELISTED | {h.strip().lower() for h in options.allow_headers}
        self._expose = ", ".join(options.expose_headers)

    def allows(self, origin: str) -> bool:
        return self._any_origin or origin.lower() in self._origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, headers)(scope, receive, send)
            return
        # Which origin is named in the answer depends on the request's Origin, so caches must key on it;
        # with any origin and no credentials the answer is "*" for all, the same for everyone.
        vary = not self._any_origin or self.options.allow_credentials
        allowed = origin is not None and self.allows(origin)
        if not allowed and not vary:
            await app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                if allowed and "access-control-allow-origin" not in out:  # a handler's own CORS headers win
                    assert origin is not None
                    out.update(self._allow(origin))
                    if self._expose:
                        out["access-control-expose-headers"] = self._expose
                if vary:
                    out.add_vary_header("Origin")
            await send(message)

        await app(scope, receive, send_with_cors)

    def _allow(self, origin: str) -> dict[str, str]:
        named = self.options.allow_credentials or not self._any_origin
        allow = {"access-control-allow-origin": origin if named else "*"}
        if self.options.allow_credentials:
            allow["access-control-allow-credentials"] = "true"
        return allow

    def _preflight(self, origin: str, headers: Headers) -> ASGIApp:
        vary = {"vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
        if not self.allows(origin):
            return json_response({"error": f"CORS: pages on {origin} may not call this API"}, 403, vary)
        method = headers["access-control-request-method"].strip().upper()
        if "*" not in self._methods and method not in self._methods:
            allowed = ", ".join(sorted(self._methods))
            return json_response({"error": f"CORS: {method} is not allowed here (allowed: {allowed})"}, 403, vary)
        asked = [h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",") if h.strip()]
        refused = [h for h in asked if "*" not in self._headers and h not in self._headers]
        if refused:
            return json_response({"error": f"CORS: the header(s) {', '.join(refused)} are not allowed here"}, 403, vary)
        answer = self._allow(origin) | vary
        # The exact method and headers asked for, not "*": with credentials a browser reads "*" literally.
        answer["access-control-allow-methods"] = method
        if asked:
            answer["access-control-allow-headers"] = ", ".join(asked)
        answer["access-control-max-age"] = str(self.options.max_age)
        return Response(status_code=204, headers=answer)
