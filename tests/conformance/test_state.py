"""StateStore conformance: each store's two, the user's state and Stepline's control records, keep the same
promises, and neither sees the other's groups."""

from __future__ import annotations

import pytest

from stepline import NotJSONError
from stepline.adapters.base import StateStore

from .conftest import Adapters


@pytest.fixture(params=["state", "control"])
def store(request: pytest.FixtureRequest, adapters: Adapters) -> StateStore:
    """The StateStore under test: the user's state, or the store of Stepline's own records."""
    chosen: StateStore = getattr(adapters, request.param)
    return chosen


async def test_set_get_delete(store: StateStore) -> None:
    assert await store.get("g", "k") is None
    await store.set("g", "k", {"a": [1, 2.5, "x", None, True]})
    assert await store.get("g", "k") == {"a": [1, 2.5, "x", None, True]}
    await store.set("g", "k", 3)
    assert await store.get("g", "k") == 3
    assert await store.delete("g", "k") is True
    assert await store.delete("g", "k") is False
    assert await store.get("g", "k") is None


async def test_groups_are_separate_and_clear(store: StateStore) -> None:
    await store.set("g1", "a", 1)
    await store.set("g1", "b", 2)
    await store.set("g2", "a", "other")
    assert await store.get_group("g1") == {"a": 1, "b": 2}
    assert await store.get_group("missing") == {}
    assert await store.groups() == ["g1", "g2"]
    assert await store.clear("g1") == 2
    assert await store.get_group("g1") == {}
    assert await store.get("g2", "a") == "other"


async def test_values_are_copies(store: StateStore) -> None:
    value = {"list": [1]}
    await store.set("g", "k", value)
    value["list"].append(2)
    got = await store.get("g", "k")
    got["list"].append(3)
    assert await store.get("g", "k") == {"list": [1]}


async def test_large_values(store: StateStore) -> None:
    big = {"rows": [{"i": i, "text": "x" * 100} for i in range(20_000)]}  # ~2.5 MB of JSON
    await store.set("g", "big", big)
    assert await store.get("g", "big") == big


async def test_non_json_values_are_refused(store: StateStore) -> None:
    with pytest.raises(NotJSONError, match="is not JSON"):
        await store.set("g", "k", {1, 2})
    assert await store.get("g", "k") is None


async def test_atomic_updates(store: StateStore) -> None:
    from stepline import StateUpdateError
    from stepline.adapters.base import CompareAndSet, Increment, Merge

    assert (await store.update("g", "n", Increment())).value == 1
    assert (await store.update("g", "n", Increment(2.5))).value == 3.5
    assert (await store.update("g", "d", Merge({"a": 1}))).value == {"a": 1}
    assert (await store.update("g", "d", Merge({"b": 2}))).value == {"a": 1, "b": 2}
    missed = await store.update("g", "c", CompareAndSet("x", "y"))
    assert (missed.applied, missed.value) == (False, None)
    created = await store.update("g", "c", CompareAndSet(None, "first"))
    assert (created.applied, created.value) == (True, "first")
    swapped = await store.update("g", "c", CompareAndSet("first", "second"))
    assert swapped.applied and await store.get("g", "c") == "second"
    with pytest.raises(StateUpdateError, match="cannot increment state g/c"):
        await store.update("g", "c", Increment())
    with pytest.raises(StateUpdateError, match="cannot merge into state g/n"):
        await store.update("g", "n", Merge({"x": 1}))
    assert await store.get("g", "c") == "second"


async def test_increments_from_many_tasks_are_not_lost(store: StateStore) -> None:
    import asyncio

    from stepline.adapters.base import Increment

    await asyncio.gather(*(store.update("g", "count", Increment()) for _ in range(500)))
    assert await store.get("g", "count") == 500


async def test_state_and_control_are_apart(adapters: Adapters) -> None:
    for one, other in ((adapters.state, adapters.control), (adapters.control, adapters.state)):
        await one.set("mine", "k", 1)
        assert await other.get("mine", "k") is None
        assert await other.get_group("mine") == {}
        assert await other.groups() == []
        assert await other.delete("mine", "k") is False
        assert await other.clear("mine") == 0
        assert await one.get_group("mine") == {"k": 1}  # the other's delete and clear did not reach it
        assert await one.clear("mine") == 1
    # One name in both is two groups, each with its own values.
    await adapters.state.set("g", "k", "user")
    await adapters.control.set("g", "k", "stepline")
    assert (await adapters.state.get("g", "k"), await adapters.control.get("g", "k")) == ("user", "stepline")
    assert await adapters.state.groups() == await adapters.control.groups() == ["g"]
