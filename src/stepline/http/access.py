"""Who may use the admin API and the Workbench: everyone in dev; in start mode, the holder of the token."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from stepline._json import dumps


def refusal(request: Request, *, dev: bool, token: str | None, what: str, query_token: bool = False) -> Response | None:
    """None if the request may go on; else the 403 (no token configured) or 401 (wrong or missing) to send.

    `query_token` also accepts `?token=` (for EventSource, which cannot send headers)."""
    if dev:
        return None
    if not token:
        return _error(f"{what} is off; set STEPLINE_ADMIN_TOKEN to enable it", 403)
    sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not sent and query_token:
        sent = request.query_params.get("token", "")
    if not hmac.compare_digest(sent.encode(), token.encode()):
        return _error("missing or wrong bearer token", 401)
    return None


def _error(message: str, status: int) -> Response:
    return Response(dumps({"error": message}), status, media_type="application/json")
