"""The planner agent splits the question into one task per specialist and hands each its task by event."""

from typing import Any

from desk.agents import PLANNER, Plan

from stepline import Context

config = {
    "type": "event",
    "name": "Planner",
    "subscribes": ["question.asked"],
    "emits": ["task.market", "task.risk"],
    "flows": ["research-desk"],
    "infrastructure": {"handler": {"timeout": 120}},
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    question_id = input["questionId"]
    question = await ctx.state.get(question_id, "question")
    plan = await ctx.llm.structured(question, Plan, system=PLANNER)
    await ctx.state.set(question_id, "plan", plan.model_dump())
    await ctx.state.set(question_id, "status", "researching")
    for specialist, task in plan.model_dump().items():
        await ctx.emit(f"task.{specialist}", {"questionId": question_id, "task": task})
