"""The stream hub on its own, with a store that answers slowly when told to: the orderings a real server
produces only now and then, made certain."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from stepline.adapters.memory import MemoryStreamStore
from stepline.core.streams import Hub, Outbox
from stepline.steps.loader import load_project
from stepline.steps.streams import Subscription

from ..conftest import ProjectFactory


class HeldSnapshot(MemoryStreamStore):
    """Its next snapshot is read at once but handed back only when `release` is set: a slow read."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.release = asyncio.Event()

    async def snapshot(self, stream: str, group: str) -> tuple[dict[str, Any], int]:
        taken = await super().snapshot(stream, group)
        if self.hold:
            self.hold = False
            await self.release.wait()
        return taken


def texts(outbox: Outbox) -> list[dict[str, Any]]:
    return [json.loads(out.text) for out in outbox._queue.values()]


async def test_a_join_whose_snapshot_is_older_than_the_channel_reads_again(make_project: ProjectFactory) -> None:
    root = make_project({"steps/s_stream.py": 'config = {"name": "s", "schema": {"type": "object"}}'})
    store = HeldSnapshot()
    hub = Hub(store, load_project(root).streams)
    await hub.set("s", "g", "a", {"n": 1})
    slow, fast = Outbox(), Outbox()
    store.hold = True
    first = asyncio.create_task(hub.join(slow, "x", Subscription("s", "g")))  # its snapshot: at 1, held
    await asyncio.sleep(0.01)
    await hub.set("s", "g", "b", {"n": 2})  # the channel has no number yet: held back
    await hub.join(fast, "y", Subscription("s", "g"))  # reads at 2 and starts the channel there
    store.release.set()
    await first
    await hub.set("s", "g", "c", {"n": 3})
    items = {}
    for message in texts(slow):
        event = message["event"]
        if event["type"] == "sync":
            items = {i["id"]: i for i in event["data"]}
        else:
            items[event["data"]["id"]] = event["data"]
    assert sorted(items) == ["a", "b", "c"], "b, set between the two reads, reached the slow joiner"
    await hub.close()
