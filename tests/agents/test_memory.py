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
    async with serve(make_project(CHAT), llm=llm.settings(), store="memory://") as app:
        await app.client.post("/chat/ada", json={"say": "I am Ada."})
        await app.client.post("/chat/bob", json={"say": "Who am I?"})
    assert sent(llm, 1) == [("system", "You are a shop assistant."), ("user", "Who am I?")]


async def test_truncate_keeps_the_newest_messages(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add("a1", "a2", "a3")
    async with serve(make_project(CHAT), llm=llm.settings(), store="memory://") as app:
        for say in ("q1", "q2", "q3"):
            await app.client.post("/chat/ada", json={"say": say, "max": 2})
        assert await app.state("customers", "ada") == [
            {"role": "user", "content": "q3"},
            {"role": "assistant", "content": "a3"},
        ]
    assert sent(llm, 2)[1:] == [("user", "q2"), ("assistant", "a2"), ("user", "q3")]


async def test_summarize_folds_old_messages_into_a_summary(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add("a1", "a2", "Ada asked q1 and q2.")  # the third answer is the summary the memory asks for
    async with serve(make_project(CHAT), llm=llm.settings(), store="memory://") as app:
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
    async with serve(make_project(PIPELINE), llm=llm.settings(), store="memory://") as app:
        await app.client.post("/start", json={})
        await app.settle()
        await app.client.post("/start", json={})
        await app.settle()
    contents: list[Any] = [m["content"] for m in llm.requests[1]["messages"]]
    assert contents == ["first question", "answer one", "second question"]
    assert [m["content"] for m in llm.requests[2]["messages"]] == ["first question"]  # a new trace starts afresh


FAN_OUT = {
    "steps/start_step.py": """
        config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["chat"]}
        async def handler(req, ctx):
            for i in range(req.body["n"]):
                await ctx.emit("chat", {"i": i, "max": req.body["max"], "policy": req.body["policy"]})
            return {"status": 202}
    """,
    "steps/chat_step.py": """
        config = {"type": "event", "name": "Chat", "subscribes": ["chat"]}
        async def handler(input, ctx):
            memory = ctx.llm.conversation(max_messages=input["max"], policy=input["policy"])
            await ctx.llm.chat(f"q{input['i']}", memory=memory)
    """,
}


def _answer(body: dict[str, Any]) -> str:
    """q7 gets a7; a summary request gets S[...] naming every message it folds (older summaries too)."""
    import re

    last = str(body["messages"][-1]["content"])
    if body["messages"][0]["content"].startswith("Summarize"):
        return "S[" + " ".join(sorted(set(re.findall(r"\b[qa]\d+\b", last)))) + "]"
    return "a" + last[1:]


async def test_concurrent_appends_to_one_conversation_on_sqlite_keep_every_message(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    """20 steps of one trace chat at once with the same conversation: all 40 messages are kept."""
    llm.add(*[_answer] * 20)
    async with serve(make_project(FAN_OUT), llm=llm.settings()) as app:  # the default engine: SQLite
        r = await app.client.post("/start", json={"n": 20, "max": 100, "policy": "truncate"})
        await app.settle()
        stored = await app.stepline.engine.control.get("conversations", r.headers["x-trace-id"])
    contents = sorted(m["content"] for m in stored)
    assert len(stored) == 40, contents
    assert contents == sorted([f"q{i}" for i in range(20)] + [f"a{i}" for i in range(20)])
    for i in range(20):  # each answer still follows its own question... somewhere after it
        assert stored.index({"role": "user", "content": f"q{i}"}) < stored.index(
            {"role": "assistant", "content": f"a{i}"}
        )


async def test_concurrent_appends_with_summarize_lose_no_message_and_keep_none_twice(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    """With "summarize", the model is asked between the read and the write: a conflict must neither drop
    the messages another writer added nor keep a message both in a summary and in the list."""
    llm.add(*[_answer] * 200)
    async with serve(make_project(FAN_OUT), llm=llm.settings()) as app:
        r = await app.client.post("/start", json={"n": 20, "max": 8, "policy": "summarize"})
        await app.settle()
        stored = await app.stepline.engine.control.get("conversations", r.headers["x-trace-id"])
    summary, *recent = stored
    assert summary["role"] == "system" and summary["content"].startswith("Summary of the earlier conversation: S[")
    folded = set(summary["content"].split("S[", 1)[1].rstrip("]").split())
    kept = [m["content"] for m in recent]
    assert "Summary" not in " ".join(kept)  # one summary, at the head
    assert len(kept) == len(set(kept)) and not folded & set(kept)
    assert folded | set(kept) == {f"q{i}" for i in range(20)} | {f"a{i}" for i in range(20)}
