"""The worked example of docs/durable.md, run as written: an order waits for its payment, sleeps an hour
on a fake clock, ships; and the same order, not paid in three days, is cancelled."""

from __future__ import annotations

import re
from pathlib import Path

from stepline.core.durable import runs
from stepline.testing import FakeClock, serve

from .conftest import ProjectFactory

DOC = Path(__file__).resolve().parents[1] / "docs" / "durable.md"
SHIPPED = """
config = {"type": "event", "name": "Shipped", "subscribes": ["order.shipped", "payment.requested"]}
async def handler(input, ctx):
    await ctx.state.set("seen", input["order"] + ("-label" if "label" in input else "-asked"), input)
"""


def _example() -> str:
    [block] = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "# steps/order_step.py" in b]
    return block


async def test_the_worked_example_waits_sleeps_and_ships(make_project: ProjectFactory) -> None:
    root = make_project({"steps/order_step.py": _example(), "steps/shipped_step.py": SHIPPED})
    clock = FakeClock()
    async with serve(root, clock=clock) as app:
        order = {"id": "o-1", "address": "Berlin, DE", "total": 20.0}
        await app.emit("order.placed", order)
        await app.settle()
        assert (await app.state("seen", "o-1-asked"))["amount"] == 24.5
        [waiting] = await runs(app.stepline.engine.control)
        assert waiting["waiting"]["topic"] == "payment.received"
        await app.emit("payment.received", {"order": "o-1", "amount": 24.5})
        await app.settle()
        assert await app.state("seen", "o-1-label") is None  # sleeping its hour
        clock.advance(3601)
        await app.settle()
        assert await app.state("seen", "o-1-label") == {"order": "o-1", "label": "label-o-1", "paid": 24.5}
        assert await runs(app.stepline.engine.control) == []

        await app.emit("order.placed", {"id": "o-2", "address": "Lyon, FR", "total": 10.0})
        await app.settle()
        clock.advance(3 * 86400 + 1)
        await app.settle()
        assert await app.state("orders", "o-2") == "cancelled: not paid"
