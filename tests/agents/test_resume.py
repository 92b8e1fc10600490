"""Agents that resume instead of repeating: in an event step, every model call and tool call of
`ctx.llm.run` is a memoized step (checked against the model server's own request log), and a tool that needs
a person's approval suspends the run until the decision, across a restart of the app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stepline import Stepline
from stepline.core.durable import runs
from stepline.testing import Answer, ScriptedLLM, serve

from ..conftest import ProjectFactory


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


AGENT = {
    "steps/agent_step.py": """
    config = {"type": "event", "name": "Agent", "subscribes": ["ask"], "emits": ["note.taken", "answered"],
              "infrastructure": {"queue": {"backoff": {"initial": 0.01, "jitter": 0}}}}

    async def lookup(city: str, ctx) -> dict:
        \"\"\"The weather in a city.\"\"\"
        await ctx.state.increment("tools", "lookup")
        return {"city": city, "sky": "clear"}

    async def note(text: str, ctx) -> str:
        \"\"\"Take a note for the team.\"\"\"
        await ctx.state.increment("tools", "note")
        await ctx.emit("note.taken", {"text": text})
        return "noted"

    async def handler(input, ctx):
        reply = await ctx.llm.run(input["q"], tools=[lookup, note])
        if await ctx.state.increment("runs", "agent") == 1:
            raise RuntimeError("the step fails after the tool calls")
        await ctx.emit("answered", {"text": reply.text})
        await ctx.state.set("answer", "agent", reply.text)
""",
    "steps/notes_step.py": """
    config = {"type": "event", "name": "Notes", "subscribes": ["note.taken", "answered"]}
    async def handler(input, ctx):
        await ctx.state.increment("received", "events")
""",
}


async def test_a_retried_agent_step_repeats_no_model_call_tool_call_or_emit(
    make_project: ProjectFactory, store: str, llm: ScriptedLLM
) -> None:
    llm.add(
        Answer.tool_call("lookup", {"city": "Oslo"}),
        Answer.tool_call("note", {"text": "Oslo is clear"}),
        "Clear skies in Oslo.",
    )
    root = make_project(AGENT)
    async with serve(root, store=store, llm=llm.settings()) as app:
        await app.emit("ask", {"q": "Weather in Oslo? Note it."})
        await app.settle()
        assert await app.state("answer", "agent") == "Clear skies in Oslo."
        assert await app.state("runs", "agent") == 2  # it failed once, and ran again
        assert len(llm.requests) == 3  # the model was called three times in all, not six
        assert await app.state("tools", "lookup") == 1 and await app.state("tools", "note") == 1
        assert await app.state("received", "events") == 2  # note.taken once, answered once


APPROVAL = {
    "steps/agent_step.py": """
    from stepline import Tool
    config = {"type": "event", "name": "Refunder", "subscribes": ["refund.asked"]}

    async def refund(order: str, amount: int, ctx) -> str:
        \"\"\"Refund an order.\"\"\"
        await ctx.state.increment("refunded", order)
        return f"refunded {amount}"

    async def handler(input, ctx):
        reply = await ctx.llm.run(input["q"], tools=[Tool.function(refund, needs_approval=True)])
        await ctx.state.set("answer", input["order"], reply.text)
""",
    "steps/decide_step.py": """
    config = {"type": "api", "name": "Decide", "path": "/decide", "method": "POST"}
    async def handler(req, ctx):
        [pending] = await ctx.approvals.pending()
        decided = await ctx.approvals.decide(pending.name, pending.key, approved=req.body["approved"], by="ada")
        return {"status": 200, "body": {"name": pending.name, "status": decided.status, "data": pending.data}}
""",
}


@pytest.mark.parametrize("approved", [True, False])
async def test_a_tool_that_needs_approval_suspends_and_resumes_after_a_restart(
    make_project: ProjectFactory, shared_store: str, llm: ScriptedLLM, approved: bool
) -> None:
    llm.add(
        Answer.tool_call("refund", {"order": "o1", "amount": 30}),
        lambda request: Answer(text=f"done: {request['messages'][-1]['content']}"),
    )
    root = make_project(APPROVAL)
    app = Stepline(root, store=shared_store, llm=llm.settings())
    await app.start()
    try:
        await app.emit("refund.asked", {"q": "Refund o1, 30.", "order": "o1"})
        await app.settle()
        [waiting] = await runs(app.engine.control)
        assert waiting["status"] == "suspended" and waiting["waiting"]["topic"] == "stepline.approvals"
        assert await app.engine.state.get("refunded", "o1") is None
    finally:
        await app.stop()
    assert len(llm.requests) == 1
    async with serve(root, store=shared_store, llm=llm.settings()) as app:  # a new process, hours later
        response = await app.client.post("/decide", json={"approved": approved})
        assert response.status_code == 200
        assert response.json()["name"] == "tool.refund"
        assert response.json()["data"] == {"tool": "refund", "arguments": {"order": "o1", "amount": 30}}
        await app.settle()
        answer = await app.state("answer", "o1")
        if approved:
            assert answer == "done: refunded 30" and await app.state("refunded", "o1") == 1
        else:
            assert answer.startswith("done: error: a person rejected this call of refund")
            assert await app.state("refunded", "o1") is None
        assert len(llm.requests) == 2  # the first call was not made again after the restart
        assert await runs(app.stepline.engine.control) == []
