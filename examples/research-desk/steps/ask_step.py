"""A question comes in: stored, then handed to the planner."""

from typing import Any

from pydantic import BaseModel, Field

from stepline import ApiRequest, Context


class Question(BaseModel):
    question: str = Field(min_length=5)


config = {
    "type": "api",
    "name": "AskDesk",
    "path": "/questions",
    "method": "POST",
    "bodySchema": Question,
    "emits": ["question.asked"],
    "flows": ["research-desk"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, Any]:
    question_id = ctx.trace_id
    await ctx.state.set(question_id, "question", req.body["question"])
    await ctx.state.set(question_id, "status", "planning")
    await ctx.emit("question.asked", {"questionId": question_id})
    return {"status": 202, "body": {"questionId": question_id}}
