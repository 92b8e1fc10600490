"""The editor agent waits for both findings, then writes the answer (once, however the findings arrive)."""

from typing import Any

from desk.agents import EDITOR, SPECIALISTS

from stepline import Context

config = {
    "type": "event",
    "name": "Editor",
    "subscribes": ["finding.ready"],
    "flows": ["research-desk"],
    "infrastructure": {"handler": {"timeout": 120}},
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    question_id = input["questionId"]
    findings = {who: await ctx.state.get(question_id, f"finding.{who}") for who in SPECIALISTS}
    if None in findings.values():
        return  # the other specialist has not finished: its finding wakes this step again
    # Both findings can arrive at once: only the run that moves the status on writes the answer.
    if not await ctx.state.compare_and_set(question_id, "status", "researching", "editing"):
        return
    question = await ctx.state.get(question_id, "question")
    notes = "\n\n".join(f"{who} analyst: {text}" for who, text in findings.items())
    answer = await ctx.llm.chat(f"Question: {question}\n\n{notes}", system=EDITOR)
    await ctx.state.set(question_id, "answer", answer.text)
    await ctx.state.set(question_id, "status", "answered")
