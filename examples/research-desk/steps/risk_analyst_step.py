"""The risk analyst agent: works on its task and hands the finding to the editor."""

from typing import Any

from desk.agents import research

from stepline import Context

config = {
    "type": "event",
    "name": "RiskAnalyst",
    "subscribes": ["task.risk"],
    "emits": ["finding.ready"],
    "flows": ["research-desk"],
    "infrastructure": {"handler": {"timeout": 120}},
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    await research("risk", input, ctx)
