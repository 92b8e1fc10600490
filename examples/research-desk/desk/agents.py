"""The three agents of the desk: what each is told, and the plan the planner returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from stepline import Context

PLANNER = (
    "You plan research for an investment committee. Split the question into one task for a market "
    "analyst and one for a risk analyst, each a single, specific instruction."
)
MARKET = "You are a market analyst. Answer your task in three sentences, with the figures you rely on."
RISK = "You are a risk analyst. Name the two or three largest risks for your task, one sentence each."
EDITOR = "You are the editor. Combine the analysts' findings into one answer of at most five sentences."

SPECIALISTS = {"market": MARKET, "risk": RISK}


class Plan(BaseModel):
    market: str = Field(description="the market analyst's task")
    risk: str = Field(description="the risk analyst's task")


async def research(specialist: str, task: dict[str, Any], ctx: Context) -> None:
    """A specialist's whole job: answer its task in its own voice, then hand the finding to the editor."""
    reply = await ctx.llm.chat(task["task"], system=SPECIALISTS[specialist])
    await ctx.state.set(task["questionId"], f"finding.{specialist}", reply.text)
    await ctx.emit("finding.ready", {"questionId": task["questionId"], "from": specialist})
