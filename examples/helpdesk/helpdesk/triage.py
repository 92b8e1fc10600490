"""The triage of a customer's message: what `ctx.llm.structured` turns the message into.

The field descriptions are part of the JSON Schema the model is sent, so they are instructions too. A reply
that does not validate (a category not in the list, a refund without a reason) goes back to the model with
the errors, and is repaired, before the step ever sees it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .policy import Reason

TRIAGE = (
    "You triage the messages customers send to the support desk of an online kitchenware shop. "
    "Classify the message. Take an order number only from the message itself (like A-1002); never make one up."
)


class Triage(BaseModel):
    category: Literal["order_status", "refund", "product_question", "billing", "other"]
    urgency: Literal["low", "normal", "high"] = Field(
        description="high: money taken wrongly, a safety problem, or a customer about to leave"
    )
    needs_refund: bool = Field(description="the customer asks for their money back")
    order_id: str | None = Field(None, description='the order number named in the message, like "A-1002"')
    refund_reason: Reason | None = Field(None, description="why they want their money back, when they do")

    @model_validator(mode="after")
    def _a_refund_has_a_reason(self) -> Triage:
        # The refund step picks the policy's rule by the reason: a refund without one cannot be priced.
        if self.needs_refund and self.refund_reason is None:
            raise ValueError("refund_reason is required when needs_refund is true")
        return self
