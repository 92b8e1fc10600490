"""What the approve and reject endpoints share: finding the report and checking it awaits a decision.

(Not a step: only files ending in `_step.py` are.)"""

from stepline import ApiResponse, Context


async def awaiting_decision(ctx: Context, report_id: str) -> ApiResponse | None:
    """None when the report awaits approval; otherwise the error response to send (404 or 409)."""
    status = await ctx.state.get(report_id, "status")
    if status is None:
        return {"status": 404, "body": {"error": f"no report {report_id}"}}
    if status != "awaiting_approval":
        return {"status": 409, "body": {"error": f"report {report_id} is {status}, not awaiting approval"}}
    return None
