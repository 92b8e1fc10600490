"""The refund policy, as a plain typed function.

The support agent calls it as a tool to tell a customer what they would get back; the refund step calls
the same function to decide what is paid. One rule in code, rather than a policy in a prompt that the model
may read its own way, and an amount the model cannot talk up: the refund step recomputes it from the order.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Reason = Literal["damaged", "wrong_item", "not_delivered", "changed_mind"]

APPROVAL_LIMIT = 100.0  # USD: a refund above this waits for a person (steps/refunds/process_refund_step.py)
RESTOCKING_FEE = 15  # percent kept back when the customer simply changed their mind


class RefundQuote(BaseModel):
    amount: float
    percent: int
    rule: str
    needs_approval: bool


def refund_policy(order_total: float, reason: Reason) -> RefundQuote:
    """What the shop's refund policy pays back for an order, and whether a person must approve it first.

    Args:
        order_total: what the customer paid for the order, in USD (the order's "total")
        reason: why the customer wants their money back
    """
    if reason == "changed_mind":
        percent, rule = 100 - RESTOCKING_FEE, f"changed mind: refunded less a {RESTOCKING_FEE}% restocking fee"
    else:
        percent, rule = 100, f"{reason.replace('_', ' ')}: refunded in full"
    amount = round(order_total * percent / 100, 2)
    return RefundQuote(amount=amount, percent=percent, rule=rule, needs_approval=amount > APPROVAL_LIMIT)
