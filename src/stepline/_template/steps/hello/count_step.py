"""Counts greetings. A second step on the flow: any number of steps can follow one topic."""

from typing import Any

from stepline import Context

config = {
    "type": "event",
    "name": "CountGreetings",
    "description": "Keeps a running count of greetings",
    "subscribes": ["hello.greeted"],
    "emits": [],
    "flows": ["hello"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    # increment is atomic, even with several workers running this step at once
    total = await ctx.state.increment("stats", "greetings")
    ctx.logger.info("greeted", {"greeting": input["greeting"], "total": total})
