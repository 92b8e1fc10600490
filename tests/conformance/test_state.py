"""StateStore conformance."""

from __future__ import annotations

import pytest

from stepline import NotJSONError

from .conftest import Adapters


async def test_set_get_delete(adapters: Adapters) -> None:
    s = adapters.state
    assert await s.get("g", "k") is None
    await s.set("g", "k", {"a": [1, 2.5, "x", None, True]})
    assert await s.get("g", "k") == {"a": [1, 2.5, "x", None, True]}
    await s.set("g", "k", 3)
    assert await s.get("g", "k") == 3
    assert await s.delete("g", "k") is True
    assert await s.delete("g", "k") is False
    assert await s.get("g", "k") is None


async def test_groups_are_separate_and_clear(adapters: Adapters) -> None:
    s = adapters.state
    await s.set("g1", "a", 1)
    await s.set("g1", "b", 2)
    await s.set("g2", "a", "other")
    assert await s.get_group("g1") == {"a": 1, "b": 2}
    assert await s.get_group("missing") == {}
    assert await s.groups() == ["g1", "g2"]
    assert await s.clear("g1") == 2
    assert await s.get_group("g1") == {}
    assert await s.get("g2", "a") == "other"


async def test_values_are_copies(adapters: Adapters) -> None:
    s = adapters.state
    value = {"list": [1]}
    await s.set("g", "k", value)
    value["list"].append(2)
    got = await s.get("g", "k")
    got["list"].append(3)
    assert await s.get("g", "k") == {"list": [1]}


async def test_large_values(adapters: Adapters) -> None:
    big = {"rows": [{"i": i, "text": "x" * 100} for i in range(20_000)]}  # ~2.5 MB of JSON
    await adapters.state.set("g", "big", big)
    assert await adapters.state.get("g", "big") == big


async def test_non_json_values_are_refused(adapters: Adapters) -> None:
    with pytest.raises(NotJSONError, match="is not JSON"):
        await adapters.state.set("g", "k", {1, 2})
    assert await adapters.state.get("g", "k") is None


async def test_atomic_updates(adapters: Adapters) -> None:
    from stepline import StateUpdateError
    from stepline.adapters.base import CompareAndSet, Increment, Merge

    s = adapters.state
    assert (await s.update("g", "n", Increment())).value == 1
    assert (await s.update("g", "n", Increment(2.5))).value == 3.5
    assert (await s.update("g", "d", Merge({"a": 1}))).value == {"a": 1}
    assert (await s.update("g", "d", Merge({"b": 2}))).value == {"a": 1, "b": 2}
    missed = await s.update("g", "c", CompareAndSet("x", "y"))
    assert (missed.applied, missed.value) == (False, None)
    created = await s.update("g", "c", CompareAndSet(None, "first"))
    assert (created.applied, created.value) == (True, "first")
    swapped = await s.update("g", "c", CompareAndSet("first", "second"))
    assert swapped.applied and await s.get("g", "c") == "second"
    with pytest.raises(StateUpdateError, match="cannot increment state g/c"):
        await s.update("g", "c", Increment())
    with pytest.raises(StateUpdateError, match="cannot merge into state g/n"):
        await s.update("g", "n", Merge({"x": 1}))
    assert await s.get("g", "c") == "second"


async def test_increments_from_many_tasks_are_not_lost(adapters: Adapters) -> None:
    import asyncio

    from stepline.adapters.base import Increment

    await asyncio.gather(*(adapters.state.update("g", "count", Increment()) for _ in range(500)))
    assert await adapters.state.get("g", "count") == 500
