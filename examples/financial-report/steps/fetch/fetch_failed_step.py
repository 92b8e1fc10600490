"""A source had no data: the report fails, with each source's reason where GET /reports/{id} shows it."""

from typing import Any

from finance.events import DataFetchFailed
from finance.progress import progress

from stepline import Context

config = {
    "type": "event",
    "name": "ReportFetchFailed",
    "description": "Marks the report failed when a source has no data for the month",
    "subscribes": ["report.data.fetch_failed"],
    "emits": [],
    "input": DataFetchFailed,
    "flows": ["financial-reporting"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id = input["reportId"]
    # Both sources may fail, at the same moment: merge is atomic, so neither reason overwrites the other.
    errors = await ctx.state.merge(report_id, "errors", {input["source"]: input["error"]})
    await ctx.state.set(report_id, "status", "failed")
    await progress(ctx, report_id, "failed")
    ctx.logger.warn("report failed", {"reportId": report_id, "source": input["source"], "errors": len(errors)})
