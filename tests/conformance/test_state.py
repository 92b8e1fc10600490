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
