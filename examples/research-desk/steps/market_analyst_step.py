"""The market analyst agent: works on its task and hands the finding to the editor."""

from typing import Any

from desk.agents import SPECIALISTS

from stepline import Context

config = {
    "type": "event",
    "name": "MarketAnalyst",
    "subscribes": ["task.market"],
    "emits": ["finding.ready"],
    "flows": ["research-desk"],
    "infrastructure": {"handler": {"timeout": 120}},
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    reply = await ctx.llm.chat(input["task"], system=SPECIALISTS["market"])
    await ctx.state.set(input["questionId"], "finding.market", reply.text)
    await ctx.emit("finding.ready", {"questionId": input["questionId"], "from": "market"})
