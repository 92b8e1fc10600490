"""`ctx.llm` through the real `openai` client against a real local OpenAI-compatible server (ScriptedLLM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from stepline import LLMSettings, Price
from stepline.testing import Answer, ScriptedLLM, serve

from ..conftest import ProjectFactory


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


def settings(llm: ScriptedLLM, **kw: Any) -> LLMSettings:
    return llm.settings(prices={"scripted": Price(input=1.0, output=4.0)}, **kw)


def records(trace: list[Any], kind: str) -> list[dict[str, Any]]:
    return [r.data for r in trace if r.kind == kind]


ASK = {
    "steps/ask_step.py": """
        config = {"type": "api", "name": "Ask", "path": "/ask", "method": "POST"}
        async def handler(req, ctx):
            reply = await ctx.llm.chat(req.body["q"], system="Be brief.")
            return {"answer": reply.text, "tokens": [reply.usage.input_tokens, reply.usage.output_tokens],
                    "cost": reply.cost, "trace": ctx.trace_id}
    """,
}


async def test_a_chat_call_answers_and_leaves_tokens_cost_and_latency_in_the_trace(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add(Answer(text="Paris.", usage=(1200, 300)))
    async with serve(make_project(ASK), llm=settings(llm)) as app:
        r = await app.client.post("/ask", json={"q": "Capital of France?"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"] == "Paris."
        assert body["tokens"] == [1200, 300]
        assert body["cost"] == pytest.approx((1200 * 1.0 + 300 * 4.0) / 1e6)
        (call,) = records(await app.trace(body["trace"]), "llm")
    assert call["model"] == "scripted"
    assert call["tokens_in"] == 1200 and call["tokens_out"] == 300
    assert call["cost"] == pytest.approx(0.0024)
    assert call["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert call["reply"] == "Paris."
    assert call["latency_ms"] > 0 and call["retries"] == 0 and call["status"] == "ok"
    # what reached the server is what the trace says was sent
    assert llm.requests[0]["messages"] == call["messages"]


async def test_a_model_without_a_price_has_no_cost(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add("ok")
    async with serve(make_project(ASK), llm=llm.settings()) as app:
        r = await app.client.post("/ask", json={"q": "?"})
        assert r.json()["cost"] is None


async def test_rate_limits_are_retried_with_the_retries_in_the_trace(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add(Answer.failure(429, "slow down", retry_after=0), Answer.failure(503), "finally")
    async with serve(make_project(ASK), llm=settings(llm)) as app:
        r = await app.client.post("/ask", json={"q": "?"})
        assert r.json()["answer"] == "finally"
        (call,) = records(await app.trace(r.json()["trace"]), "llm")
    assert call["retries"] == 2
    assert len(llm.requests) == 3


async def test_after_max_retries_the_step_fails_with_the_reason(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add(*[Answer.failure(429, "slow down", retry_after=0)] * 3)
    async with serve(make_project(ASK), llm=settings(llm, max_retries=2)) as app:
        r = await app.client.post("/ask", json={"q": "?"})
        assert r.status_code == 500
        trace_id = r.headers["x-trace-id"]
        (call,) = records(await app.trace(trace_id), "llm")
        (end,) = records(await app.trace(trace_id), "end")
    assert call["status"] == "error" and call["retries"] == 2
    assert "429" in call["error"] and "gave up after 2 retries" in call["error"]
    assert "LLMError" in end["error"]


async def test_an_error_retrying_cannot_fix_is_raised_at_once_with_advice(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add(Answer.failure(401, "bad key"))
    async with serve(make_project(ASK), llm=settings(llm)) as app:
        r = await app.client.post("/ask", json={"q": "?"})
        assert r.status_code == 500
        (call,) = records(await app.trace(r.headers["x-trace-id"]), "llm")
    assert len(llm.requests) == 1
    assert "401" in call["error"] and "OPENAI_API_KEY" in call["error"]


STRUCTURED = {
    "steps/extract_step.py": """
        from pydantic import BaseModel
        from stepline import StructuredOutputError

        class Invoice(BaseModel):
            customer: str
            total: float

        config = {"type": "api", "name": "Extract", "path": "/extract", "method": "POST"}
        async def handler(req, ctx):
            try:
                invoice = await ctx.llm.structured(req.body["text"], Invoice, repair=req.body["repair"])
            except StructuredOutputError as exc:
                return {"status": 422, "body": {"error": str(exc)}}
            return invoice
    """,
}


async def test_structured_output_is_validated_and_a_bad_reply_repaired(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add('{"customer": "ACME"}', '```json\n{"customer": "ACME", "total": 12.5}\n```')
    async with serve(make_project(STRUCTURED), llm=settings(llm)) as app:
        r = await app.client.post("/extract", json={"text": "ACME owes 12.50", "repair": 1})
        assert r.status_code == 200, r.text
        assert r.json() == {"customer": "ACME", "total": 12.5}
        calls = records(await app.trace(r.headers["x-trace-id"]), "llm")
    first, second = llm.requests
    schema = first["response_format"]["json_schema"]
    assert schema["name"] == "Invoice" and schema["schema"]["required"] == ["customer", "total"]
    # the repair turn shows the model its reply and what was wrong with it
    assert second["messages"][-2] == {"role": "assistant", "content": '{"customer": "ACME"}'}
    assert "total" in second["messages"][-1]["content"] and "Field required" in second["messages"][-1]["content"]
    assert [c["attempt"] for c in calls] == [0, 1]


async def test_structured_output_gives_up_after_the_repair_budget(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add("not json", "still not json")
    async with serve(make_project(STRUCTURED), llm=settings(llm)) as app:
        r = await app.client.post("/extract", json={"text": "?", "repair": 1})
    assert r.status_code == 422
    assert "Invoice" in r.json()["error"] and "still not json" in r.json()["error"]
    assert len(llm.requests) == 2


STREAM = {
    "steps/stream_step.py": """
        config = {"type": "api", "name": "Stream", "path": "/stream", "method": "POST"}
        async def handler(req, ctx):
            stream = ctx.llm.stream(req.body["q"])
            pieces = [piece async for piece in stream]
            return {"pieces": pieces, "text": stream.text, "tokens": stream.usage.output_tokens}
    """,
}


async def test_streaming_yields_pieces_as_they_arrive_and_records_the_whole(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add(Answer(text="one two three four", usage=(5, 4)))
    async with serve(make_project(STREAM), llm=settings(llm)) as app:
        r = await app.client.post("/stream", json={"q": "count"})
        body = r.json()
        (call,) = records(await app.trace(r.headers["x-trace-id"]), "llm")
    assert body["pieces"] == ["one ", "two ", "three ", "four"]
    assert body["text"] == "one two three four" and body["tokens"] == 4
    assert llm.requests[0]["stream"] is True
    assert call["call"] == "stream" and call["reply"] == "one two three four" and call["tokens_out"] == 4


SYNC = {
    "steps/sync_step.py": """
        config = {"type": "api", "name": "SyncAsk", "path": "/sync", "method": "POST"}
        def handler(req, ctx):  # a sync handler gets a blocking ctx.llm
            return {"answer": ctx.llm.chat(req.body["q"]).text}
    """,
}


async def test_a_sync_handler_calls_the_model_too(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add("from a thread")
    async with serve(make_project(SYNC), llm=settings(llm)) as app:
        r = await app.client.post("/sync", json={"q": "?"})
    assert r.json() == {"answer": "from a thread"}


async def test_a_call_without_a_model_says_where_to_set_one(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    async with serve(make_project(ASK), llm=LLMSettings(base_url=llm.base_url)) as app:
        r = await app.client.post("/ask", json={"q": "?"})
        assert r.status_code == 500
        (end,) = records(await app.trace(r.headers["x-trace-id"]), "end")
    assert "STEPLINE_LLM_MODEL" in end["error"] and "stepline.toml" in end["error"]
    assert llm.requests == []


def test_scripted_answers_are_plain_json_over_http(llm: ScriptedLLM) -> None:
    """The fake is a real server: a plain HTTP client sees the OpenAI wire format."""
    import httpx2

    llm.add(Answer.tool_call("lookup", {"id": 7}))
    response = httpx2.post(f"{llm.base_url}/chat/completions", json={"model": "m", "messages": []})
    call = response.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["type"] == "function" and json.loads(call["function"]["arguments"]) == {"id": 7}
    assert httpx2.post(f"{llm.base_url}/chat/completions", json={}).status_code == 500  # the script ran out


CALLS = {
    "steps/calls_step.py": """
        from pydantic import BaseModel
        from stepline import SteplineError

        class Weather(BaseModel):
            city: str
            celsius: float

        def temperature(city: str) -> float:
            \"\"\"Today's temperature in a city, in degrees Celsius.\"\"\"
            return 21.5

        config = {"type": "api", "name": "Calls", "path": "/calls/{call}", "method": "POST"}
        async def handler(req, ctx):
            call, q = req.path_params["call"], req.body.get("q", "?")
            memory = ctx.llm.memory("ada")
            try:
                if call == "stream-tools":
                    stream = ctx.llm.stream(q, tools=[temperature])
                    return {"text": "".join([p async for p in stream])}
                if call == "stream-memory":
                    stream = ctx.llm.stream(q, memory=memory)
                    return {"text": "".join([p async for p in stream])}
                if call == "structured-memory":
                    return {"output": (await ctx.llm.structured(q, Weather, memory=memory)).model_dump()}
                if call == "run-output":
                    reply = await ctx.llm.run(q, tools=[temperature], output=Weather, memory=memory, temperature=0)
                    return {"output": reply.output.model_dump(), "text": reply.text, "turns": reply.turns,
                            "tokens": reply.usage.output_tokens, "is_model": isinstance(reply.output, Weather)}
                if call == "misspelt":
                    await ctx.llm.chat(q, memroy=memory)
                if call == "run-unknown":
                    await ctx.llm.run(q, tools=[temperature], ouptut=Weather)
                if call == "chat-tools":
                    await ctx.llm.chat(q, tools=[temperature])
            except SteplineError as exc:
                return {"status": 400, "body": {"error": f"{type(exc).__name__}: {exc}"}}
            return {"status": 404}
    """,
    "steps/sync_calls_step.py": """
        from pydantic import BaseModel

        class Weather(BaseModel):
            city: str
            celsius: float

        def temperature(city: str) -> float:
            \"\"\"Today's temperature in a city, in degrees Celsius.\"\"\"
            return 21.5

        config = {"type": "api", "name": "SyncCalls", "path": "/sync-calls", "method": "POST"}
        def handler(req, ctx):  # a sync handler: the same parameters, blocking
            memory = ctx.llm.memory("bob")
            reply = ctx.llm.run("Weather in Oslo?", tools=[temperature], output=Weather, memory=memory)
            again = ctx.llm.structured("And now?", Weather, memory=memory, repair=0)
            return {"run": reply.output.model_dump(), "structured": again.model_dump(),
                    "remembered": len(memory_messages(ctx))}

        def memory_messages(ctx):
            return ctx.state.get("memory", "bob")
    """,
}


async def test_stream_with_tools_is_refused_before_anything_is_sent_and_points_to_run(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    async with serve(make_project(CALLS), llm=settings(llm), store="memory://") as app:
        r = await app.client.post("/calls/stream-tools", json={"q": "Weather in Oslo?"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error.startswith("LLMUsageError: ctx.llm.stream(..., tools=...) is not accepted")
    assert "ctx.llm.run(prompt, tools=[...])" in error
    assert llm.requests == []  # nothing billed for tool calls that would have been dropped


async def test_a_misspelt_or_misplaced_keyword_is_a_clear_error_not_the_clients_type_error(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    async with serve(make_project(CALLS), llm=settings(llm), store="memory://") as app:
        misspelt = (await app.client.post("/calls/misspelt", json={})).json()["error"]
        unknown = (await app.client.post("/calls/run-unknown", json={})).json()["error"]
        chat_tools = (await app.client.post("/calls/chat-tools", json={})).json()["error"]
    assert misspelt.startswith("LLMUsageError: ctx.llm.chat() got an unknown keyword 'memroy': did you mean memory=")
    assert "extra_body" in misspelt
    assert "unknown keyword 'ouptut': did you mean output=" in unknown
    assert (
        chat_tools.startswith("LLMUsageError: ctx.llm.chat(..., tools=...) is not accepted")
        and "ctx.llm.run" in chat_tools
    )
    assert llm.requests == []


async def test_stream_with_memory_sends_the_history_and_remembers_the_whole_reply(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add("I am listening.", "You said hello.")
    async with serve(make_project(CALLS), llm=settings(llm), store="memory://") as app:
        await app.client.post("/calls/stream-memory", json={"q": "hello"})
        r = await app.client.post("/calls/stream-memory", json={"q": "What did I say?"})
        assert r.json() == {"text": "You said hello."}
        stored = await app.state("memory", "ada")
    assert [m["content"] for m in llm.requests[1]["messages"]] == ["hello", "I am listening.", "What did I say?"]
    assert [m["content"] for m in stored] == ["hello", "I am listening.", "What did I say?", "You said hello."]


async def test_structured_with_memory_sends_the_history_and_remembers_the_valid_reply(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add("I am listening.", '{"city": "Oslo"}', '{"city": "Oslo", "celsius": 3}')
    async with serve(make_project(CALLS), llm=settings(llm), store="memory://") as app:
        await app.client.post("/calls/stream-memory", json={"q": "I live in Oslo."})
        r = await app.client.post("/calls/structured-memory", json={"q": "My weather?"})
        assert r.json() == {"output": {"city": "Oslo", "celsius": 3.0}}
        stored = await app.state("memory", "ada")
    assert [m["content"] for m in llm.requests[1]["messages"]] == ["I live in Oslo.", "I am listening.", "My weather?"]
    # the repair turn is not memory: the question and the answer that validated are
    assert [m["content"] for m in stored] == [
        "I live in Oslo.",
        "I am listening.",
        "My weather?",
        '{"city": "Oslo", "celsius": 3}',
    ]


async def test_run_with_output_gives_the_final_answer_as_the_model_after_the_tool_loop(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add(
        Answer.tool_call("temperature", {"city": "Oslo"}, usage=(10, 2)),
        Answer(text="It is 21.5 degrees in Oslo.", usage=(10, 3)),  # prose: asked again for the model
        Answer(text='{"city": "Oslo"}', usage=(10, 4)),  # does not validate: repaired, as structured repairs
        Answer(text='{"city": "Oslo", "celsius": 21.5}', usage=(10, 5)),
    )
    async with serve(make_project(CALLS), llm=settings(llm), store="memory://") as app:
        r = await app.client.post("/calls/run-output", json={"q": "Weather in Oslo?"})
        assert r.status_code == 200, r.text
        calls = records(await app.trace(r.headers["x-trace-id"]), "llm")
        stored = await app.state("memory", "ada")
    assert r.json() == {
        "output": {"city": "Oslo", "celsius": 21.5},
        "text": '{"city": "Oslo", "celsius": 21.5}',
        "turns": 2,
        "tokens": 14,  # every call of the run is counted
        "is_model": True,
    }
    for request in llm.requests[:2]:  # the tool loop's turns: tools, no schema
        assert "tools" in request and "response_format" not in request and request["temperature"] == 0
    first, repaired = llm.requests[2:]
    for request in (first, repaired):  # the final answer is asked for in the schema, without tools
        assert "tools" not in request and request["response_format"]["json_schema"]["name"] == "Weather"
        assert request["temperature"] == 0
    assert first["messages"][-2] == {"role": "assistant", "content": "It is 21.5 degrees in Oslo."}
    assert "JSON" in first["messages"][-1]["content"]
    assert "celsius" in repaired["messages"][-1]["content"] and "Field required" in repaired["messages"][-1]["content"]
    assert [c["call"] for c in calls] == ["tools", "tools", "structured", "structured"]
    # memory keeps the loop, the request for the final answer and the answer that validated; not the repair
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert stored[-1]["content"] == '{"city": "Oslo", "celsius": 21.5}'


async def test_run_with_output_takes_a_final_answer_that_already_validates_without_another_call(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add(Answer.tool_call("temperature", {"city": "Oslo"}), '```json\n{"city": "Oslo", "celsius": 21.5}\n```')
    async with serve(make_project(CALLS), llm=settings(llm), store="memory://") as app:
        r = await app.client.post("/calls/run-output", json={"q": "Weather in Oslo?"})
    assert r.json()["output"] == {"city": "Oslo", "celsius": 21.5} and r.json()["turns"] == 2
    assert len(llm.requests) == 2


async def test_a_sync_handler_gets_run_with_output_and_structured_with_memory(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add('{"city": "Oslo", "celsius": 21.5}', '{"city": "Oslo", "celsius": 22}')
    async with serve(make_project(CALLS), llm=settings(llm), store="memory://") as app:
        r = await app.client.post("/sync-calls", json={})
        assert r.status_code == 200, r.text
    assert r.json() == {
        "run": {"city": "Oslo", "celsius": 21.5},
        "structured": {"city": "Oslo", "celsius": 22.0},
        "remembered": 4,
    }
    assert [m["content"] for m in llm.requests[1]["messages"]][:2] == [
        "Weather in Oslo?",
        '{"city": "Oslo", "celsius": 21.5}',
    ]
