"""Dead letters in bulk: replaying all of them means all of them, however many there are."""

from __future__ import annotations

import time

from stepline import Stepline
from stepline._ids import new_id
from stepline.adapters.base import ClaimSpec, Event

from .conftest import ProjectFactory

PROJECT = {
    "steps/flaky_step.py": """
        config = {"type": "event", "name": "Flaky", "subscribes": ["job"]}
        async def handler(input, ctx):
            pass
    """
}


async def test_replay_puts_back_every_dead_letter_not_the_first_thousand(
    make_project: ProjectFactory, store: str
) -> None:
    app = Stepline(make_project(PROJECT), store=store)
    queue = app.adapters.queue
    try:
        for n in range(1500):
            await queue.publish(Event(new_id(), "job", {"n": n}, new_id(), None, time.time()), {"Flaky": 0.0})
        while claimed := await queue.claim({"Flaky": ClaimSpec(60)}, 500):
            for delivery in claimed:
                await queue.dead_letter(delivery, "boom", None)
        assert (await queue.stats()).dead == 1500
        assert await app.replay() == 1500
        stats = await queue.stats()
        assert (stats.dead, stats.ready) == (0, 1500)
    finally:
        await app.adapters.close()
