"""JSON encoding shared by the engine and every adapter (orjson: ~10x the stdlib on dumps)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

from stepline._errors import FieldError, NotJSONError, SchemaValidationError


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


# -- JSON from outside (request bodies, the admin API, the CLI) ------------------------------------------

MAX_DEPTH = 64  # arrays and objects nested deeper are refused: validators recurse, and so would a 500
_INT64 = (-(2**63), 2**64 - 1)  # the integers orjson (and so every store) keeps exactly
_LONG_NUMBER = re.compile(rb"\d{19,}")


def parse(raw: bytes | str, what: str = "the body") -> Any:
    """JSON from outside, refused with a SchemaValidationError that names the place when it is not JSON, is
    nested deeper than MAX_DEPTH, or holds an integer beyond 64 bits (orjson would turn it into a float,
    silently changing the number)."""
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaValidationError(what, [FieldError("", f"not valid JSON: {exc}")]) from None
    # Depth first: the exact re-parse below (json.loads) recurses, and raised RecursionError (a 500) on a body
    # orjson took (it nests up to 1024 levels) that was nested past ~1000 levels and held a long number.
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise SchemaValidationError(
            what, [FieldError(_find_deep(value), f"nested more than {MAX_DEPTH} levels deep; flatten the data")]
        )
    if _LONG_NUMBER.search(data):  # a long run of digits: maybe an integer orjson made a float of
        check_keepable(json.loads(data), what)  # exact integers, to find them by place
    return value


def check_keepable(value: Any, what: str, fix: str = "send it as a string") -> None:
    """Refuse (SchemaValidationError naming the place) a number no store keeps exactly: an integer beyond 64
    bits, or a float that is not finite (NaN and Infinity are not JSON: orjson writes them as null)."""
    problem = _find(value, _unkeepable)
    if problem is None:
        return
    path, number = problem
    if isinstance(number, float):
        message = f"the number {number} is not finite, which JSON cannot carry; send a finite number"
    else:
        try:
            text = str(number)
        except ValueError:  # past Python's 4300-digit limit for int -> str (a validator may make one)
            text = f"of {number.bit_length()} bits"
        message = (
            f"the integer {text[:40]}{'...' if len(text) > 40 else ''} is beyond 64 bits, "
            f"which cannot be kept exactly; {fix}"
        )
    raise SchemaValidationError(what, [FieldError(path, message)])


def _unkeepable(v: Any) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    return isinstance(v, int) and not isinstance(v, bool) and not fits(v)


def fits(number: int) -> bool:
    """Whether an integer is one orjson, and so every store, keeps exactly (64 bits)."""
    return _INT64[0] <= number <= _INT64[1]


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _find_deep(value: Any) -> str:
    """The path of the first place nested deeper than MAX_DEPTH."""
    found = _find(value, lambda v: False, depth_limit=MAX_DEPTH)
    return found[0] if found is not None else ""


def _find(value: Any, bad: Callable[[Any], bool], depth_limit: int | None = None) -> tuple[str, Any] | None:
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth_limit is not None and depth >= depth_limit:
                return path, item
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, f"{path}.{key}" if path else str(key), depth + 1) for key, child in pairs)
        elif bad(item):
            return path, item
    return None
