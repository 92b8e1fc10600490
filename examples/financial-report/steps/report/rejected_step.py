"""The reviewer said no: record why. (A revision loop could start here.)"""

config = {
    "type": "event",
    "name": "ReportRejected",
    "description": "Records a rejection and its reason",
    "subscribes": ["report.rejected"],
    "emits": [],
    "flows": ["financial-reporting"],
}


async def handler(input, ctx):
    await ctx.state.set(input["reportId"], "rejection", input["reason"])
    await ctx.state.set(input["reportId"], "status", "rejected")
    ctx.logger.info("report rejected", {"reportId": input["reportId"], "reason": input["reason"]})
