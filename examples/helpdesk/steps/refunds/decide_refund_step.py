"""POST /refunds/{orderId}/decision: a person approves or rejects a refund that waits for one.

`ctx.approvals.decide` records the decision and announces it; the ProcessRefund run waiting in
`ctx.approvals.ask` resumes on it, in the trace of the customer's message, so one trace tells the story."""

from pydantic import BaseModel, Field

from stepline import ApiRequest, ApiResponse, Context


class Decision(BaseModel):
    approved: bool
    by: str = Field(min_length=1, description="who decides", examples=["sam@shop.example"])
    comment: str | None = Field(None, max_length=1000)


config = {
    "type": "api",
    "name": "DecideRefund",
    "description": "A person approves or rejects a refund that waits for a decision",
    "path": "/refunds/{orderId}/decision",
    "method": "POST",
    "bodySchema": Decision,
    "flows": ["helpdesk"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    order_id = req.path_params["orderId"]
    decision = req.body
    approval = await ctx.approvals.decide(
        "refund", order_id, approved=decision["approved"], by=decision["by"], comment=decision.get("comment")
    )
    if approval is None:  # never asked, decided already, or timed out: decide changes nothing
        return {"status": 409, "body": {"error": f"no refund of order {order_id} is waiting for a decision"}}
    return {"status": 202, "body": {"orderId": order_id, "decision": approval.status}}
