"""The reviewer said no: record why. (A revision loop could start here.)"""

from typing import Any

from finance.events import ReportRejected
from finance.progress import progress

from stepline import Context

config = {
    "type": "event",
    "name": "ReportRejected",
    "description": "Records a rejection and its reason",
    "subscribes": ["report.rejected"],
    "emits": [],
    "input": ReportRejected,
    "flows": ["financial-reporting"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    await ctx.state.set(input["reportId"], "rejection", input["reason"])
    await ctx.state.set(input["reportId"], "status", "rejected")
    await progress(ctx, input["reportId"], "rejected", input["reason"])
    ctx.logger.info("report rejected", {"reportId": input["reportId"], "reason": input["reason"]})
