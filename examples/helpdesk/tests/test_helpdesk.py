"""The help desk end to end, over HTTP against a real server, with a scripted model (no network, no key).

Each test scripts the model's turns in order: for one customer message, the triage first (a JSON reply to
`ctx.llm.structured`), then the support agent's turns (tool calls, then its answer)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from stepline import Tool, load_project
from stepline.core.durable import runs
from stepline.testing import Answer, FakeClock, RunningApp, ScriptedLLM, serve

ROOT = Path(__file__).resolve().parent.parent  # the example project, wherever pytest runs from
# The project's own package, importable here as Stepline makes it importable for the steps. (In a project
# of your own, `pythonpath = ["."]` in pytest's settings does the same.)
sys.path.insert(0, str(ROOT))
from helpdesk.policy import refund_policy  # noqa: E402

ANA, BEN = "ana@example.com", "ben@example.com"


def triage(**fields: Any) -> str:
    """A triage as the model writes it: the JSON `ctx.llm.structured` validates into a `Triage`."""
    plain = {"category": "other", "urgency": "normal", "needs_refund": False, "order_id": None, "refund_reason": None}
    return json.dumps(plain | fields)


def refund_triage(order_id: str, reason: str = "damaged") -> str:
    return triage(category="refund", needs_refund=True, order_id=order_id, refund_reason=reason)


async def message(app: RunningApp, customer: str, text: str) -> dict[str, Any]:
    response = await app.client.post("/messages", json={"customer": customer, "text": text})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body["traceId"] = response.headers["x-trace-id"]
    return body


async def stepline(*args: str) -> str:
    """A `stepline` command, run as a person types it in a terminal: its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stepline", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def refund_of(app: RunningApp, order_id: str) -> dict[str, Any]:
    response = await app.client.get(f"/refunds/{order_id}")
    assert response.status_code == 200, response.text
    refund: dict[str, Any] = response.json()
    return refund


# -- the project ------------------------------------------------------------------------------------------


def test_the_project_loads_without_warnings() -> None:
    project = load_project(ROOT)
    assert project.warnings == []
    assert sorted(project.steps) == ["DecideRefund", "GetOrder", "GetRefund", "ProcessRefund", "SupportMessage"]
    assert project.flows == ["helpdesk"]


# -- 1. a tool that is a plain function ---------------------------------------------------------------------


def test_the_refund_policy_is_a_plain_function_and_its_tool_schema_comes_from_its_signature() -> None:
    # A tool is an ordinary function: tested as one, with no server and no model.
    assert refund_policy(24.0, "damaged").model_dump() == {
        "amount": 24.0,
        "percent": 100,
        "rule": "damaged: refunded in full",
        "needs_approval": False,
    }
    assert refund_policy(349.0, "changed_mind").amount == 296.65  # less the 15% restocking fee
    assert refund_policy(100.0, "wrong_item").needs_approval is False  # the limit itself needs no one
    assert refund_policy(100.01, "wrong_item").needs_approval is True

    # What the model is shown: the docstring's first paragraph, and a schema from the signature and Args:.
    tool = Tool.function(refund_policy)
    assert tool.description.startswith("What the shop's refund policy pays back for an order")
    assert tool.parameters["required"] == ["order_total", "reason"]
    reason = tool.parameters["properties"]["reason"]
    assert reason["enum"] == ["damaged", "wrong_item", "not_delivered", "changed_mind"]
    assert reason["description"] == "why the customer wants their money back"


# -- 2. a tool that is a step -------------------------------------------------------------------------------


async def test_get_order_is_an_api_step_of_its_own() -> None:
    async with serve(ROOT, store="memory://") as app:
        order = await app.client.get("/orders/A-1002")
        missing = await app.client.get("/orders/Z-9")
    assert order.json() == {
        "id": "A-1002",
        "item": "Espresso machine",
        "total": 349.0,
        "status": "delivered",
        "deliveredOn": "2026-11-26",
    }
    assert "customer" not in order.json()  # the tool's answer carries no personal data
    assert (missing.status_code, missing.json()) == (404, {"error": "no order Z-9"})


async def test_the_agent_looks_up_the_order_with_the_step_and_prices_the_refund_with_the_function() -> None:
    with ScriptedLLM(
        triage(category="refund", order_id="A-1001"),  # a question about a refund, not yet a request
        Answer.tool_call("GetOrder", {"id": "A-1001"}),
        Answer.tool_call("refund_policy", {"order_total": 24.0, "reason": "changed_mind"}),
        "If you send the mug back unused, you get $20.40: the price less a 15% restocking fee.",
    ) as llm:
        async with serve(ROOT, store="memory://", llm=llm.settings()) as app:
            text = "I changed my mind about the mug, order A-1001. What would I get back?"
            body = await message(app, ANA, text)
            trace = await app.trace(body["traceId"])
    assert body["reply"].startswith("If you send the mug back unused, you get $20.40")
    assert body["refund"] is None  # a question about a refund opens none

    # Each tool ran once, with the arguments the model gave, in the message's trace.
    tools = [(r.data["tool"], r.data["kind"], r.data["arguments"], r.data["status"]) for r in trace if r.kind == "tool"]
    assert tools == [
        ("GetOrder", "step", {"id": "A-1001"}, "ok"),
        ("refund_policy", "function", {"order_total": 24.0, "reason": "changed_mind"}, "ok"),
    ]
    # The step tool ran the real GetOrder step: the model read its response, as an HTTP client would.
    looked_up = json.loads(llm.requests[2]["messages"][-1]["content"])
    assert looked_up["status"] == 200 and looked_up["body"]["item"] == "Travel mug"
    assert {r.step for r in trace if r.kind == "end"} == {"SupportMessage", "GetOrder"}
    priced = json.loads(llm.requests[3]["messages"][-1]["content"])
    assert priced == {"amount": 20.4, "percent": 85, "rule": priced["rule"], "needs_approval": False}

    # The model was offered both tools, GetOrder with the route's path parameter as its argument.
    offered = {t["function"]["name"]: t["function"] for t in llm.requests[1]["tools"]}
    assert set(offered) == {"refund_policy", "GetOrder"}
    assert offered["GetOrder"]["parameters"] == {
        "type": "object",
        "properties": {"id": {"type": "string"}},
        "required": ["id"],
    }
    assert offered["GetOrder"]["description"].startswith("Look up an order by its number")


async def test_a_tool_error_goes_back_to_the_model_which_carries_on() -> None:
    with ScriptedLLM(
        triage(category="order_status", order_id="A-9999"),
        Answer.tool_call("GetOrder", {"id": "A-9999"}),
        Answer.tool_call("refund_policy", {"order_total": "a lot", "reason": "damaged"}),
        "I cannot find order A-9999: could you check the number?",
    ) as llm:
        async with serve(ROOT, store="memory://", llm=llm.settings()) as app:
            body = await message(app, ANA, "Where is order A-9999?")
    assert body["reply"] == "I cannot find order A-9999: could you check the number?"
    assert json.loads(llm.requests[2]["messages"][-1]["content"]) == {
        "status": 404,
        "body": {"error": "no order A-9999"},
    }
    bad_arguments = llm.requests[3]["messages"][-1]["content"]
    assert bad_arguments.startswith("error: invalid arguments: order_total:")


# -- 3. structured output -----------------------------------------------------------------------------------


async def test_the_triage_is_read_into_a_pydantic_model_and_an_invalid_one_is_repaired() -> None:
    with ScriptedLLM(
        # A refund without a reason does not validate (Triage's own rule): sent back with the error ...
        triage(category="refund", needs_refund=True, order_id="A-1001"),
        # ... and answered again, in a ```json fence, which is accepted.
        "```json\n" + refund_triage("A-1001") + "\n```",
        "I am sorry about the mug: your $24.00 are on their way back.",
    ) as llm:
        async with serve(ROOT, store="memory://", llm=llm.settings()) as app:
            body = await message(app, ANA, "My travel mug A-1001 arrived cracked! I want my money back.")
            await app.settle()
    assert body["triage"] == {
        "category": "refund",
        "urgency": "normal",
        "needs_refund": True,
        "order_id": "A-1001",
        "refund_reason": "damaged",
    }
    asked = llm.requests[0]
    assert asked["messages"][0]["content"].startswith("You triage the messages customers send")
    schema = asked["response_format"]["json_schema"]
    assert schema["name"] == "Triage"
    assert schema["schema"]["properties"]["category"]["enum"] == [
        "order_status",
        "refund",
        "product_question",
        "billing",
        "other",
    ]
    repair = llm.requests[1]["messages"][-1]["content"]
    assert "refund_reason is required when needs_refund is true" in repair
    # The validated triage, not the model's wording, started the refund.
    assert body["refund"] == {"orderId": "A-1001", "customer": ANA, "reason": "damaged", "status": "requested"}
    assert len(llm.requests) == 3


# -- 4. memory ----------------------------------------------------------------------------------------------


async def test_the_conversation_with_a_customer_is_remembered_by_the_next_request(tmp_path: Path) -> None:
    first, second = "Hello, my order has a problem.", "It is A-1002, the espresso machine. Is it covered?"
    with ScriptedLLM(
        triage(),
        "Sorry to hear that! Which order is it?",
        triage(category="product_question", order_id="A-1002"),
        Answer.tool_call("GetOrder", {"id": "A-1002"}),
        "Your espresso machine (A-1002) was delivered on 2026-11-26: tell me what is wrong with it.",
        triage(),
        "Hello Ben, how can I help?",
    ) as llm:
        async with serve(ROOT, store=f"sqlite:///{tmp_path}/desk.db", llm=llm.settings()) as app:
            await message(app, ANA, first)
            await message(app, ANA, second)  # a new request, a new trace: the memory is in state
            await message(app, BEN, "Hi!")
            remembered = await app.state("customers", ANA)

    # The agent's first turn on the second request: the system prompt, the first exchange, the new message.
    agent = llm.requests[3]["messages"]
    assert agent[0]["role"] == "system"
    assert agent[1:] == [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "Sorry to hear that! Which order is it?"},
        {"role": "user", "content": second},
    ]
    # The triage classifies the message alone: it is given no memory, and adds nothing to it.
    assert [m["role"] for m in llm.requests[2]["messages"]] == ["system", "user"]
    # What is kept: both exchanges, the tool call and its result included; not the system prompt.
    assert [m["role"] for m in remembered] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    assert remembered[3]["tool_calls"][0]["function"]["name"] == "GetOrder"
    assert json.loads(remembered[4]["content"])["body"]["deliveredOn"] == "2026-11-26"
    # Another customer starts from nothing.
    assert llm.requests[6]["messages"][1:] == [{"role": "user", "content": "Hi!"}]


# -- 5. approvals -------------------------------------------------------------------------------------------


async def test_a_small_refund_is_paid_without_waiting_for_anyone(tmp_path: Path) -> None:
    with ScriptedLLM(refund_triage("A-1001"), "Your $24.00 are on their way back.") as llm:
        async with serve(ROOT, store=f"sqlite:///{tmp_path}/desk.db", llm=llm.settings()) as app:
            body = await message(app, ANA, "My mug A-1001 arrived cracked, please refund it.")
            await app.settle()
            refund = await refund_of(app, "A-1001")
            trace = await app.trace(body["traceId"])
            assert await runs(app.stepline.engine.control) == []  # nothing waits
    assert refund["status"] == "refunded" and refund["amount"] == 24.0
    assert refund["payment"] == "pay-A-1001-2400" and "approvedBy" not in refund
    assert [(r.step, r.data["status"]) for r in trace if r.kind == "end" and r.step == "ProcessRefund"] == [
        ("ProcessRefund", "ok")
    ]


async def test_a_large_refund_waits_for_a_person_then_is_paid_once_approved(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/desk.db"
    with ScriptedLLM(refund_triage("A-1002"), "A colleague approves refunds over $100 within 3 days.") as llm:
        async with serve(ROOT, store=store, llm=llm.settings()) as app:
            body = await message(app, ANA, "My espresso machine A-1002 arrived broken. Refund, please.")
            await app.settle()
            waiting = await refund_of(app, "A-1002")
            [run] = await runs(app.stepline.engine.control)
            listed = await stepline("approvals", "--dir", str(ROOT), "--store", store, "--json")
            decided = await app.client.post(
                "/refunds/A-1002/decision", json={"approved": True, "by": "sam@shop.example"}
            )
            await app.settle()
            paid = await refund_of(app, "A-1002")
            trace = await app.trace(body["traceId"])
            assert await runs(app.stepline.engine.control) == []

    assert waiting["status"] == "awaiting_approval" and waiting["amount"] == 349.0
    assert run["step"] == "ProcessRefund" and run["status"] == "suspended"
    assert run["waiting"]["topic"] == "stepline.approvals"
    [approval] = json.loads(listed)
    assert (approval["name"], approval["key"], approval["data"]["amount"]) == ("refund", "A-1002", 349.0)
    assert approval["message"] == "Refund $349.00 of order A-1002 to ana@example.com (damaged: refunded in full)?"

    assert (decided.status_code, decided.json()) == (202, {"orderId": "A-1002", "decision": "approved"})
    assert paid["status"] == "refunded" and paid["approvedBy"] == "sam@shop.example"
    assert paid["payment"] == "pay-A-1002-34900"
    # One trace tells it all: the run suspended, and resumed in the customer's trace once approved.
    ends = [r.data["status"] for r in trace if r.kind == "end" and r.step == "ProcessRefund"]
    assert ends == ["suspended", "ok"]
    assert len(llm.requests) == 2  # the refund flow itself calls no model


async def test_a_rejected_refund_is_not_paid() -> None:
    with ScriptedLLM(refund_triage("C-3001", "wrong_item"), "A colleague will look at it.") as llm:
        async with serve(ROOT, store="memory://", llm=llm.settings()) as app:
            await message(app, "chloe@example.com", "You sent me a grinder I did not order (C-3001). Refund it.")
            await app.settle()
            decision = {"approved": False, "by": "sam@shop.example", "comment": "return the grinder first"}
            decided = await app.client.post("/refunds/C-3001/decision", json=decision)
            await app.settle()
            refund = await refund_of(app, "C-3001")
            again = await app.client.post("/refunds/C-3001/decision", json={"approved": True, "by": "sam"})
    assert decided.json()["decision"] == "rejected"
    assert refund["status"] == "rejected" and "payment" not in refund
    assert (refund["decidedBy"], refund["comment"]) == ("sam@shop.example", "return the grinder first")
    assert again.status_code == 409  # decided once, for good


async def test_a_refund_no_one_decides_within_three_days_expires(tmp_path: Path) -> None:
    clock = FakeClock()  # time moves only when the test moves it
    with ScriptedLLM(refund_triage("A-1002"), "A colleague will look at it.") as llm:
        async with serve(ROOT, store=f"sqlite:///{tmp_path}/desk.db", llm=llm.settings(), clock=clock) as app:
            await message(app, ANA, "Refund my broken espresso machine, A-1002.")
            await app.settle()
            clock.advance(3 * 86400 + 1)
            await app.settle()
            refund = await refund_of(app, "A-1002")
            late = await app.client.post("/refunds/A-1002/decision", json={"approved": True, "by": "sam"})
    assert refund["status"] == "expired" and "payment" not in refund
    assert late.status_code == 409


async def test_a_decision_needs_a_refund_that_waits_and_a_valid_body() -> None:
    async with serve(ROOT, store="memory://") as app:
        nothing = await app.client.post("/refunds/A-1001/decision", json={"approved": True, "by": "sam"})
        bad = await app.client.post("/refunds/A-1001/decision", json={"approved": "maybe"})
        unknown = await app.client.get("/refunds/A-1001")
    assert (nothing.status_code, nothing.json()) == (
        409,
        {"error": "no refund of order A-1001 is waiting for a decision"},
    )
    assert bad.status_code == 400 and {e["path"] for e in bad.json()["errors"]} == {"approved", "by"}
    assert unknown.status_code == 404


# -- what code decides, whatever the model says ---------------------------------------------------------------


async def test_asking_twice_opens_one_refund_and_no_one_refunds_anothers_order() -> None:
    with ScriptedLLM(
        refund_triage("A-1001"),
        "On its way.",
        refund_triage("A-1001"),
        "It is on its way already.",
        refund_triage("A-1001"),  # Ben names Ana's order
        "I cannot find that order among yours.",
    ) as llm:
        async with serve(ROOT, store="memory://", llm=llm.settings()) as app:
            first = await message(app, ANA, "Refund my cracked mug A-1001.")
            await app.settle()
            second = await message(app, ANA, "Did you see my message? Refund A-1001!")
            bens = await message(app, BEN, "Refund order A-1001.")
            await app.settle()
            traces = [await app.trace(body["traceId"]) for body in (first, second, bens)]
    emitted = [len([r for r in trace if r.kind == "emit"]) for trace in traces]
    assert emitted == [1, 0, 0]
    assert first["refund"]["status"] == "requested"
    assert second["refund"]["status"] == "refunded"  # the first request's refund, as it stands
    assert bens["refund"] == {
        "orderId": "A-1001",
        "status": "declined",
        "why": "this customer has no order with that number",
    }
    # The agent is told where the refund stands, in the system prompt of its call.
    assert '"status": "declined"' in llm.requests[5]["messages"][0]["content"]
