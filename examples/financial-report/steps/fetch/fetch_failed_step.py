"""A source had no data: the report fails, with the reason where GET /reports/{id} shows it."""

config = {
    "type": "event",
    "name": "ReportFetchFailed",
    "description": "Marks the report failed when a source has no data for the month",
    "subscribes": ["report.data.fetch_failed"],
    "emits": [],
    "flows": ["financial-reporting"],
}


async def handler(input, ctx):
    await ctx.state.set(input["reportId"], "status", "failed")
    await ctx.state.set(input["reportId"], "error", input["error"])
    ctx.logger.warn("report failed", {"reportId": input["reportId"], "error": input["error"]})
