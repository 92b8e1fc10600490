"""POST /messages: a customer writes to the support desk and gets an answer, in three moves.

1. Triage: `ctx.llm.structured` reads the message into a `Triage` (category, urgency, needs_refund, ...).
2. A refund the triage asks for goes to the refund flow as an event, once per order: code decides that money
   may move, from a validated field, not from the wording of a reply.
3. The support agent answers, with two tools (the refund policy, a plain function; GetOrder, an API step)
   and the memory of what this customer said in earlier requests.
"""

import json
from typing import Any

from helpdesk.orders import find_order
from helpdesk.policy import Reason, refund_policy
from helpdesk.triage import TRIAGE, Triage
from pydantic import BaseModel, Field

from stepline import ApiRequest, ApiResponse, Context, Tool

AGENT = (
    "You are the support agent of an online kitchenware shop. Be brief, warm and precise. "
    "Look orders up with GetOrder; never guess what an order holds, what it cost or where it is. "
    "Quote a refund only as refund_policy gives it, from the order's total; never promise another amount. "
    "A refund over $100 is approved by a colleague within 3 days: say so when refund_policy says needs_approval."
)


class CustomerMessage(BaseModel):
    customer: str = Field(min_length=3, description="the customer's email address", examples=["ana@example.com"])
    text: str = Field(min_length=1, max_length=4000, examples=["My espresso machine (A-1002) arrived broken."])


config = {
    "type": "api",
    "name": "SupportMessage",
    "description": "A customer writes to support: the message is triaged and answered, a refund asked for is started",
    "path": "/messages",
    "method": "POST",
    "bodySchema": CustomerMessage,
    "emits": ["refund.requested"],
    "flows": ["helpdesk"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    customer, text = req.body["customer"], req.body["text"]

    triage = await ctx.llm.structured(text, Triage, system=TRIAGE)

    refund = None
    # Without an order number there is nothing to refund yet: the agent asks for it. (Triage validates that a
    # refund has a reason; testing it here too tells mypy so.)
    if triage.needs_refund and triage.order_id and triage.refund_reason:
        refund = await open_refund(ctx, customer, triage.order_id, triage.refund_reason)

    # Long-term memory, one per customer, in state: the next request (a minute or a month later) starts
    # from this conversation. The system prompt is sent with each call and not stored, so the situation
    # below is this message's only.
    memory = ctx.llm.memory(customer, group="customers")
    situation = f"Triage of this message: {triage.model_dump_json()}\nRefund: {json.dumps(refund)}"
    reply = await ctx.llm.run(
        text,
        system=f"{AGENT}\n\n{situation}",
        tools=[refund_policy, Tool.step("GetOrder")],
        memory=memory,
        max_turns=6,
    )
    return {"status": 200, "body": {"reply": reply.text, "triage": triage.model_dump(), "refund": refund}}


async def open_refund(ctx: Context, customer: str, order_id: str, reason: Reason) -> dict[str, Any]:
    """Start the refund flow for one of the customer's orders, once: the refund as it now stands."""
    order = find_order(order_id)
    if order is None or order["customer"] != customer:
        # The model read the number from the message; whose order it is, code checks.
        return {"orderId": order_id, "status": "declined", "why": "this customer has no order with that number"}
    refund = {"orderId": order_id, "customer": customer, "reason": reason, "status": "requested"}
    # A compare-and-set from "no refund yet": a customer who asks twice, or sends two messages at once, gets
    # one refund. The second request gets the first one's record back.
    if not await ctx.state.compare_and_set("refunds", order_id, None, refund):
        existing: dict[str, Any] = await ctx.state.get("refunds", order_id)
        return existing
    await ctx.emit("refund.requested", {"orderId": order_id, "customer": customer, "reason": reason})
    return refund
