"""Pays a refund by the policy. Above the approval limit it first waits for a person's decision: the run
suspends in `ctx.approvals.ask`, holding no worker, for up to three days and across restarts, and resumes
when someone calls POST /refunds/{orderId}/decision (steps/refunds/decide_refund_step.py)."""

from typing import Any

from helpdesk.orders import find_order
from helpdesk.policy import Reason, refund_policy
from pydantic import BaseModel

from stepline import Context

REVIEW_DAYS = 3


class RefundRequested(BaseModel):
    """refund.requested: SupportMessage checked that the order is the customer's."""

    orderId: str
    customer: str
    reason: Reason


config = {
    "type": "event",
    "name": "ProcessRefund",
    "description": "Prices a refund by the policy and pays it; above the limit, only once a person approves",
    "subscribes": ["refund.requested"],
    "input": RefundRequested,
    "flows": ["helpdesk"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    order_id = input["orderId"]
    order = find_order(order_id)
    if order is None:  # SupportMessage checked it: an order gone since is a case for the dead letters
        raise LookupError(f"no order {order_id}")
    # The amount comes from the order's real total and the policy, whatever the agent told the customer.
    quote = refund_policy(order["total"], input["reason"])
    refund = {**input, "amount": quote.amount, "rule": quote.rule}

    if quote.needs_approval:
        # A run resumes from the top, so this line runs again after the decision: harmless, as what follows
        # overwrites it. (Work that must happen once, like the payment below, goes in a `ctx.step`.)
        await ctx.state.set("refunds", order_id, {**refund, "status": "awaiting_approval"})
        approval = await ctx.approvals.ask(
            "refund",
            order_id,
            data=refund,
            message=f"Refund ${quote.amount:.2f} of order {order_id} to {input['customer']} ({quote.rule})?",
            timeout=REVIEW_DAYS * 86400,
        )
        if not approval.approved:
            status = "rejected" if approval.status == "rejected" else "expired"  # or no one decided in time
            decided = {"status": status, "decidedBy": approval.by, "comment": approval.comment}
            await ctx.state.set("refunds", order_id, {**refund, **decided})
            ctx.logger.info("refund not paid", {"orderId": order_id, "status": status})
            return
        refund["approvedBy"] = approval.by

    # Once per run, even if the handler runs again: money must not move twice.
    payment = await ctx.step("pay", pay, order_id, quote.amount, idempotency_key=ctx.idempotency_key("pay"))
    await ctx.state.set("refunds", order_id, {**refund, "status": "refunded", "payment": payment})
    ctx.logger.info("refund paid", {"orderId": order_id, "amount": quote.amount})


async def pay(order_id: str, amount: float, idempotency_key: str) -> str:
    """The payment provider's refund call, in a real desk (with the key as its Idempotency-Key, so that a
    repeat after a crash is the provider's no-op). Here: the payment's reference."""
    return f"pay-{order_id}-{round(amount * 100)}"
