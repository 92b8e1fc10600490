"""The atomic state updates, as pure functions: every adapter applies them the same way."""

from __future__ import annotations

from typing import Any

from stepline._errors import StateUpdateError
from stepline.adapters.base import CompareAndSet, Increment, Merge, StateUpdate, UpdateResult


def apply(current: Any, op: StateUpdate, where: str) -> UpdateResult:
    """The result of `op` on `current` (None when the key is missing); raises StateUpdateError."""
    if isinstance(op, Increment):
        base = 0 if current is None else current
        if isinstance(base, bool) or not isinstance(base, int | float):
            raise StateUpdateError(f"cannot increment {where}: it holds {type(base).__name__} {base!r:.40}")
        return UpdateResult(True, base + op.by)
    if isinstance(op, Merge):
        base = {} if current is None else current
        if not isinstance(base, dict):
            raise StateUpdateError(f"cannot merge into {where}: it holds {type(base).__name__}, not a dict")
        return UpdateResult(True, {**base, **op.fields})
    if current == op.expected:
        return UpdateResult(True, op.new)
    return UpdateResult(False, current)


__all__ = ["CompareAndSet", "Increment", "Merge", "apply"]
