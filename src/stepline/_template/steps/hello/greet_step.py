"""Makes the greeting. An event step: it runs for every hello.requested, with retries if it fails."""

from typing import Any

from stepline import Context

config = {
    "type": "event",
    "name": "Greet",
    "description": "Builds the greeting and stores it",
    "subscribes": ["hello.requested"],
    "emits": ["hello.greeted"],
    "input": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    "flows": ["hello"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    greeting = f"Hello, {input['name']}!"
    # State outlives the request: GET /hello/{traceId} reads it back.
    await ctx.state.set("greetings", ctx.trace_id, greeting)
    await ctx.emit({"topic": "hello.greeted", "data": {"greeting": greeting}})
