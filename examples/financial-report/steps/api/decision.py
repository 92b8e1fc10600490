"""What the approve and reject endpoints share: finding the report and checking it awaits a decision."""

from typing import Any


async def awaiting_decision(ctx: Any, report_id: str) -> dict[str, Any] | None:
    """None when the report awaits approval; otherwise the error response to send."""
    status = await ctx.state.get(report_id, "status")
    if status is None:
        return {"status": 404, "body": {"error": f"no report {report_id}"}}
    if status != "awaiting_approval":
        return {"status": 409, "body": {"error": f"report {report_id} is {status}, not awaiting approval"}}
    return None
