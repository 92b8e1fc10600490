"""The request an API handler receives, and the response it may return."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pydantic import BaseModel

# The dict keys handlers written for other step frameworks use, mapped to the attribute names here.
_KEYS = {
    "body": "body",
    "pathParams": "path_params",
    "queryParams": "query_params",
    "headers": "headers",
    "rawBody": "raw_body",
    "method": "method",
    "path": "path",
}


@dataclass
class ApiRequest(Mapping[str, Any]):
    """Reads both ways: `req.body` / `req.path_params` and `req["body"]` / `req.get("pathParams")`."""

    body: Any = None
    path_params: dict[str, str] = field(default_factory=dict)
    query_params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: str = ""
    method: str = "GET"
    path: str = "/"

    @property
    def pathParams(self) -> dict[str, str]:  # the dict-format name
        return self.path_params

    @property
    def queryParams(self) -> dict[str, Any]:
        return self.query_params

    @property
    def rawBody(self) -> str:
        return self.raw_body

    def __getitem__(self, key: str) -> Any:
        attr = _KEYS.get(key, key if key in _KEYS.values() else None)
        if attr is None:
            raise KeyError(key)
        return getattr(self, attr)

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)


class ApiResponse(TypedDict, total=False):
    status: int
    body: Any
    headers: dict[str, str]


def unpack_result(result: Any) -> tuple[int, Any, dict[str, str]]:
    """A handler returns {"status", "body", "headers"}, plain data (200), a Pydantic model, or None (204)."""
    if result is None:
        return 204, None, {}
    if (
        isinstance(result, dict)
        and isinstance(result.get("status"), int)
        and set(result) <= {"status", "body", "headers"}
    ):
        return result["status"], _plain(result.get("body")), dict(result.get("headers") or {})
    return 200, _plain(result), {}


def _plain(body: Any) -> Any:
    return body.model_dump(mode="json") if isinstance(body, BaseModel) else body
