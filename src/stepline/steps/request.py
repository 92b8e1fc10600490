"""The request an API handler receives, and the response it may return."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
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
_ATTRS = frozenset(_KEYS.values())


@dataclass
class ApiRequest(MutableMapping[str, Any]):
    """Reads and writes both ways: `req.body` / `req.path_params` and `req["body"]` / `req.get("pathParams")`.

    Like the dict a Motia handler gets, it also holds keys of the project's own: a middleware sets
    `req["user"] = ...` and the handler reads `req["user"]` or `req.get("user")`. The request's own keys
    (body, pathParams, ...) always read and write the attributes, so both spellings see one value."""

    body: Any = None
    path_params: dict[str, str] = field(default_factory=dict)
    query_params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: str = ""
    method: str = "GET"
    path: str = "/"
    # The body exactly as it arrived (`raw_body` is it decoded as text, which a binary upload does not
    # survive). An attribute only, not one of the dict keys: Motia's request has no such key, and a dict
    # handler iterating the request sees Motia's keys.
    body_bytes: bytes = field(default=b"", repr=False)
    # Keys a middleware or handler added; kept apart so they can never shadow the request's own.
    _extra: dict[str, Any] = field(default_factory=dict, init=False)

    @property
    def pathParams(self) -> dict[str, str]:  # the dict-format name
        return self.path_params

    @pathParams.setter
    def pathParams(self, value: dict[str, str]) -> None:
        self.path_params = value

    @property
    def queryParams(self) -> dict[str, Any]:
        return self.query_params

    @queryParams.setter
    def queryParams(self, value: dict[str, Any]) -> None:
        self.query_params = value

    @property
    def rawBody(self) -> str:
        return self.raw_body

    @rawBody.setter
    def rawBody(self, value: str) -> None:
        self.raw_body = value

    def __getitem__(self, key: str) -> Any:
        attr = _attr(key)
        if attr is not None:
            return getattr(self, attr)
        return self._extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        attr = _attr(key)
        if attr is not None:
            setattr(self, attr, value)
        else:
            self._extra[key] = value

    def __delitem__(self, key: str) -> None:
        if _attr(key) is not None:
            raise TypeError(
                f"{key!r} is part of every request and cannot be deleted; set it instead (req[{key!r}] = ...)"
            )
        del self._extra[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (_attr(key) is not None or key in self._extra)

    def __iter__(self) -> Iterator[str]:
        yield from _KEYS
        yield from self._extra

    def __len__(self) -> int:
        return len(_KEYS) + len(self._extra)


def _attr(key: str) -> str | None:
    """The attribute a key reads: the dict-format name (`pathParams`) or the attribute's own (`path_params`)."""
    return _KEYS.get(key) or (key if key in _ATTRS else None)


@dataclass(frozen=True, repr=False)
class UploadedFile:
    """A file part of a `multipart/form-data` body, whole in memory (the body limit bounds it).

    `filename` is what the client sent: a name to show or store as data, never a path to write to."""

    filename: str
    content_type: str  # the part's Content-Type; application/octet-stream when it gave none
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)  # the part's own headers, lower-case names

    @property
    def size(self) -> int:
        return len(self.content)

    def __repr__(self) -> str:  # the size, not the bytes: a logged or printed body stays readable
        return f"UploadedFile(filename={self.filename!r}, content_type={self.content_type!r}, size={self.size})"


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
