"""JSON encoding shared by the engine and every adapter (orjson: ~10x the stdlib on dumps)."""

from __future__ import annotations

from typing import Any

import orjson

from ._errors import NotJSONError


def dumps(value: Any, what: str = "value") -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise NotJSONError(
            f"{what} is not JSON ({exc}); use dicts, lists, strings, numbers, booleans and None "
            "(call .model_dump() on a Pydantic model)"
        ) from None


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def copy(value: Any, what: str = "value") -> Any:
    """A deep copy through JSON: what a durable store would give back, so no caller shares mutable data."""
    return orjson.loads(dumps(value, what))
