"""A human reviews the draft. The gate waits for the decision without holding a worker (for days if need
be, across restarts and deploys: `ctx.wait_for`), then carries it on. The approve and reject endpoints
only record the decision and announce it."""

from typing import Any

from finance.events import ReportRef
from finance.progress import progress

from stepline import Context, WaitTimeoutError

REVIEW_DAYS = 7

config = {
    "type": "event",
    "name": "ApprovalGate",
    "description": "Waits, holding no worker, for a reviewer to approve or reject the draft (up to 7 days)",
    "subscribes": ["report.draft.created"],
    "waitsFor": ["report.decided"],
    "emits": ["report.approved", "report.rejected"],
    "input": ReportRef,
    "flows": ["financial-reporting"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id = input["reportId"]
    try:
        # The run suspends here; the decision's event (even one that came before this line) resumes it.
        decision = await ctx.wait_for("report.decided", {"reportId": report_id}, timeout=REVIEW_DAYS * 86400)
    except WaitTimeoutError:
        if await ctx.state.compare_and_set(report_id, "status", "awaiting_approval", "expired"):
            ctx.logger.warn("no reviewer decided in time", {"reportId": report_id, "days": REVIEW_DAYS})
            await progress(ctx, report_id, "expired")
        return
    if decision["approved"]:
        await ctx.emit({"topic": "report.approved", "data": {"reportId": report_id}})
    else:
        await ctx.emit({"topic": "report.rejected", "data": {"reportId": report_id, "reason": decision["reason"]}})
