"""The tool loop: typed functions, the project's own steps as tools, errors handed back to the model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from stepline import Tool, ToolError
from stepline.testing import Answer, ScriptedLLM, serve

from ..conftest import ProjectFactory


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


def records(trace: list[Any], kind: str) -> list[dict[str, Any]]:
    return [r.data for r in trace if r.kind == kind]


def test_a_function_tool_is_described_by_its_signature_and_docstring() -> None:
    def convert(amount: float, currency: str = "EUR", *, rounded: bool = False) -> float:
        """Convert an amount of US dollars into another currency.

        Longer text that the model does not need.

        Args:
            amount: dollars to convert
            currency: ISO code of the target
                currency, three letters
        """
        return amount

    tool = Tool.function(convert)
    assert tool.name == "convert"
    assert tool.description == "Convert an amount of US dollars into another currency."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "description": "dollars to convert"},
            "currency": {
                "type": "string",
                "default": "EUR",
                "description": "ISO code of the target currency, three letters",
            },
            "rounded": {"type": "boolean", "default": False},
        },
        "required": ["amount"],
    }


def test_a_tool_that_cannot_be_described_is_refused_with_the_fix() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(ToolError, match=r"parameter 'x' has no type; annotate it"):
        Tool.function(untyped)
    with pytest.raises(ToolError, match="letters, digits"):
        Tool.function(lambda: None, name="has space")


AGENT = {
    "steps/agent_step.py": """
        from stepline import Tool

        def add(a: int, b: int) -> int:
            \"\"\"Add two whole numbers.\"\"\"
            return a + b

        async def explode(reason: str) -> str:
            \"\"\"A tool that fails.\"\"\"
            raise RuntimeError(reason)

        config = {"type": "api", "name": "Agent", "path": "/agent", "method": "POST", "emits": ["order.placed"]}
        async def handler(req, ctx):
            tools = [add, explode, Tool.step("GetPrice"), Tool.emit("order.placed")]
            turns = req.body.get("turns", 8)
            reply = await ctx.llm.run(req.body["q"], tools=tools, system="Use the tools.", max_turns=turns)
            return {"answer": reply.text, "turns": reply.turns, "tokens": reply.usage.output_tokens,
                    "runs": [[r.name, r.result, r.error] for r in reply.tool_runs]}
    """,
    "steps/get_price_step.py": """
        config = {"type": "api", "name": "GetPrice", "path": "/prices/{symbol}", "method": "GET",
                  "description": "The last price of a stock."}
        async def handler(req, ctx):
            await ctx.state.set("lookups", req.path_params["symbol"], ctx.trace_id)
            return {"symbol": req.path_params["symbol"], "price": 10.5}
    """,
    "steps/place_order_step.py": """
        from pydantic import BaseModel

        class Order(BaseModel):
            symbol: str
            quantity: int

        config = {"type": "event", "name": "PlaceOrder", "subscribes": ["order.placed"], "input": Order}
        async def handler(order, ctx):
            await ctx.state.set("orders", order["symbol"], order["quantity"])
    """,
}


async def test_a_multi_turn_tool_loop_with_function_step_and_emit_tools(
    make_project: ProjectFactory, llm: ScriptedLLM
) -> None:
    llm.add(
        Answer.tool_calls_of([("add", {"a": 2, "b": 3}), ("GetPrice", {"symbol": "ACME"})], usage=(10, 2)),
        Answer.tool_call("add", {"a": "two", "b": 3}, usage=(10, 2)),  # bad arguments: the model is told
        Answer.tool_call("explode", {"reason": "boom"}, usage=(10, 2)),  # a failing tool: the model is told
        Answer.tool_call("emit_order_placed", {"symbol": "ACME", "quantity": 5}, usage=(10, 2)),
        Answer(text="Bought 5 ACME at 10.5.", usage=(10, 7)),
    )
    async with serve(make_project(AGENT), llm=llm.settings()) as app:
        r = await app.client.post("/agent", json={"q": "Buy 5 ACME"})
        assert r.status_code == 200, r.text
        await app.settle()
        body = r.json()
        trace_id = r.headers["x-trace-id"]
        trace = await app.trace(trace_id)
        assert await app.state("orders", "ACME") == 5  # the emit tool's event was handled
        assert await app.state("lookups", "ACME") == trace_id  # the step tool ran in the agent's trace

    assert body["answer"] == "Bought 5 ACME at 10.5." and body["turns"] == 5 and body["tokens"] == 15
    assert body["runs"][0] == ["add", 5, None]
    assert body["runs"][1] == ["GetPrice", {"status": 200, "body": {"symbol": "ACME", "price": 10.5}}, None]
    assert body["runs"][2][0] == "add" and "Input should be a valid integer" in body["runs"][2][2]
    assert body["runs"][3][2] == "RuntimeError: boom"
    assert body["runs"][4] == ["emit_order_placed", {"emitted": "order.placed"}, None]

    # What the model was offered: the function's schema, the step's path parameter, the topic's input schema
    offered = {t["function"]["name"]: t["function"] for t in llm.requests[0]["tools"]}
    assert offered["add"]["parameters"]["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer"}}
    assert offered["GetPrice"]["description"] == "The last price of a stock."
    assert offered["GetPrice"]["parameters"]["required"] == ["symbol"]
    assert offered["emit_order_placed"]["parameters"]["required"] == ["symbol", "quantity"]

    # What the model saw back: one tool message per call, answering that call's id
    second = llm.requests[1]["messages"]
    calls = second[-3]["tool_calls"]
    assert [m["role"] for m in second[-3:]] == ["assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in second[-2:]] == [c["id"] for c in calls]
    assert second[-2]["content"] == "5"
    assert json.loads(second[-1]["content"])["body"]["price"] == 10.5
    assert llm.requests[2]["messages"][-1]["content"].startswith("error: invalid arguments: a:")

    tools = records(trace, "tool")
    assert [(t["tool"], t["status"]) for t in tools] == [
        ("add", "ok"),
        ("GetPrice", "ok"),
        ("add", "error"),
        ("explode", "error"),
        ("emit_order_placed", "ok"),
    ]
    assert [t["turn"] for t in records(trace, "llm")] == [1, 2, 3, 4, 5]
    assert any(r.kind == "start" and r.step == "GetPrice" for r in trace)


async def test_a_step_tool_validates_like_the_http_route(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add(Answer.tool_call("emit_order_placed", {"symbol": "ACME", "quantity": "lots"}), "gave up")
    async with serve(make_project(AGENT), llm=llm.settings()) as app:
        r = await app.client.post("/agent", json={"q": "Buy"})
        await app.settle()
        assert await app.state("orders", "ACME") is None
    (run,) = r.json()["runs"]
    assert "quantity" in run[2] and "does not match its schema" in run[2]


async def test_the_turn_limit_stops_a_model_that_never_answers(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    llm.add(*[Answer.tool_call("add", {"a": 1, "b": 1})] * 3)
    async with serve(make_project(AGENT), llm=llm.settings()) as app:
        r = await app.client.post("/agent", json={"q": "loop", "turns": 3})
        assert r.status_code == 500
        (end,) = records(await app.trace(r.headers["x-trace-id"]), "end")
    assert "TurnLimitError" in end["error"] and "no final answer after 3 turns" in end["error"]
    assert len(llm.requests) == 3


async def test_an_unknown_step_tool_names_the_api_steps(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    project = dict(AGENT)
    project["steps/agent_step.py"] = AGENT["steps/agent_step.py"].replace('Tool.step("GetPrice")', 'Tool.step("Nope")')
    async with serve(make_project(project), llm=llm.settings()) as app:
        r = await app.client.post("/agent", json={"q": "?"})
        (end,) = records(await app.trace(r.headers["x-trace-id"]), "end")
    assert "Tool.step('Nope'): no API step of that name (API steps: Agent, GetPrice)" in end["error"]


def test_traces_show_prints_the_llm_calls_and_tool_runs(make_project: ProjectFactory, llm: ScriptedLLM) -> None:
    import asyncio

    from typer.testing import CliRunner

    from stepline import Price
    from stepline.cli import app as cli

    root = make_project(AGENT)
    llm.add(Answer.tool_call("add", {"a": 2, "b": 3}, usage=(1200, 30)), Answer(text="It is 5.", usage=(1300, 4)))

    async def run() -> str:
        settings = llm.settings(prices={"scripted": Price(input=1.0, output=2.0)})
        async with serve(root, llm=settings) as app:
            r = await app.client.post("/agent", json={"q": "2+3?"})
            return r.headers["x-trace-id"]

    trace_id = asyncio.run(run())
    result = CliRunner().invoke(cli, ["traces", "show", trace_id, "--dir", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for expected in (
        "llm scripted  1,200 → 30 tokens  $0.0013",
        "calls add",
        'tool add({"a": 2, "b": 3}) ok',
        "llm scripted  1,300 → 4 tokens  $0.0013",
        "It is 5.",
    ):
        assert expected in result.stdout, result.stdout


def test_a_type_out_of_reach_is_named() -> None:
    def make() -> object:
        class Local:
            pass

        def tool(x: Local) -> None:  # with postponed annotations, "Local" cannot be resolved later
            """A tool."""

        return tool

    with pytest.raises(ToolError, match=r"cannot be resolved .*define the types it uses at module level"):
        Tool.function(make())  # type: ignore[arg-type]
