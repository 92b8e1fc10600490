"""Agent memory in state: long-term across requests (and restarts), per-trace conversations, size policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stepline.testing import ScriptedLLM, serve

from ..conftest import ProjectFactory


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


CHAT = {
    "steps/chat_step.py": """
        config = {"type": "api", "name": "Chat", "path": "/chat/{user}", "method": "POST"}
        async def handler(req, ctx):
            memory = ctx.llm.memory(req.path_params["user"], group="customers",
                                    max_messages=req.body.get("max", 40), policy=req.body.get("policy", "truncate"))
            reply = await ctx.llm.chat(req.body["say"], system="You are a shop assistant.", memory=memory)
            return {"answer": reply.text}
    """,
}


def sent(llm: ScriptedLLM, n: int) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in llm.requests[n]["messages"]]


async def test_long_term_memory_carries_a_conversation_across_requests_and_restarts(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    root = make_project(CHAT)
    llm.add("Hello Ada.", "You are Ada.")
    async with serve(root, llm=llm.settings()) as app:
        await app.client.post("/chat/ada", json={"say": "My name is Ada."})
    async with serve(root, llm=llm.settings()) as app:  # a new process would see the same SQLite file
        r = await app.client.post("/chat/ada", json={"say": "Who am I?"})
        assert r.json() == {"answer": "You are Ada."}
        stored = await app.state("customers", "ada")
    assert sent(llm, 1) == [
        ("system", "You are a shop assistant."),
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "Who am I?"),
    ]
    assert len(stored) == 4  # the system prompt is not memory: it is given on every call


async def test_memory_is_per_key(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add("hi", "hi")
    async with serve(make_project(CHAT), llm=llm.settings(), engine="memory") as app:
        await app.client.post("/chat/ada", json={"say": "I am Ada."})
        await app.client.post("/chat/bob", json={"say": "Who am I?"})
    assert sent(llm, 1) == [("system", "You are a shop assistant."), ("user", "Who am I?")]


async def test_truncate_keeps_the_newest_messages(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add("a1", "a2", "a3")
    async with serve(make_project(CHAT), llm=llm.settings(), engine="memory") as app:
        for say in ("q1", "q2", "q3"):
            await app.client.post("/chat/ada", json={"say": say, "max": 2})
        assert await app.state("customers", "ada") == [
            {"role": "user", "content": "q3"},
            {"role": "assistant", "content": "a3"},
        ]
    assert sent(llm, 2)[1:] == [("user", "q2"), ("assistant", "a2"), ("user", "q3")]


async def test_summarize_folds_old_messages_into_a_summary(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add("a1", "a2", "Ada asked q1 and q2.")  # the third answer is the summary the memory asks for
    async with serve(make_project(CHAT), llm=llm.settings(), engine="memory") as app:
        for say in ("q1", "q2"):
            await app.client.post("/chat/ada", json={"say": say, "max": 3, "policy": "summarize"})
        stored = await app.state("customers", "ada")
    summary_request = sent(llm, 2)
    assert "q1" in summary_request[-1][1] and "a1" in summary_request[-1][1]
    assert stored == [
        {"role": "system", "content": "Summary of the earlier conversation: Ada asked q1 and q2."},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]


PIPELINE = {
    "steps/start_step.py": """
        config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["next"]}
        async def handler(req, ctx):
            await ctx.llm.chat("first question", memory=ctx.llm.conversation())
            await ctx.emit("next", {})
            return {"status": 202}
    """,
    "steps/next_step.py": """
        config = {"type": "event", "name": "Next", "subscribes": ["next"]}
        async def handler(input, ctx):
            await ctx.llm.chat("second question", memory=ctx.llm.conversation())
    """,
}


async def test_a_conversation_is_shared_by_the_steps_of_one_trace_only(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add("answer one", "answer two", "answer three", "answer four")
    async with serve(make_project(PIPELINE), llm=llm.settings(), engine="memory") as app:
        await app.client.post("/start", json={})
        await app.settle()
        await app.client.post("/start", json={})
        await app.settle()
    contents: list[Any] = [m["content"] for m in llm.requests[1]["messages"]]
    assert contents == ["first question", "answer one", "second question"]
    assert [m["content"] for m in llm.requests[2]["messages"]] == ["first question"]  # a new trace starts afresh
