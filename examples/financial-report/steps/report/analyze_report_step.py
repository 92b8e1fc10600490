"""Computes the figures and has the analyst agent draft the report (finance/analyst.py), then waits for a person."""

from typing import Any

from finance.analyst import write_draft
from finance.events import ReportRef
from finance.figures import figures
from finance.progress import progress

from stepline import Context

config = {
    "type": "event",
    "name": "AnalyzeReport",
    "description": "Computes the figures and drafts the report, then asks a human to approve it",
    "subscribes": ["report.data.ready"],
    "emits": ["report.draft.created"],
    "input": ReportRef,
    "flows": ["financial-reporting"],
    "infrastructure": {"handler": {"timeout": 180}},  # a few model calls; a slow provider takes a while
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id = input["reportId"]
    request = await ctx.state.get(report_id, "request")
    crm = await ctx.state.get(report_id, "crm")
    accounting = await ctx.state.get(report_id, "accounting")
    numbers = figures(crm, accounting, accounting.get("previous"))
    report = await write_draft(ctx, report_id, request["month"], numbers)
    await ctx.state.set(report_id, "figures", numbers)
    await ctx.state.set(report_id, "draft", report)
    # Delivery is at-least-once: should this run again after a reviewer already decided, the status must
    # not go back to awaiting_approval (a second approval would then be possible).
    if not await ctx.state.compare_and_set(report_id, "status", "analyzing", "awaiting_approval"):
        ctx.logger.info("draft refreshed; the report has moved on", {"reportId": report_id})
        return
    await progress(ctx, report_id, "awaiting_approval", report["title"])
    ctx.logger.info(
        "draft ready for approval",
        {"reportId": report_id, "revenue": numbers["revenue"], "netIncome": numbers["netIncome"]},
    )
    await ctx.emit({"topic": "report.draft.created", "data": {"reportId": report_id, "title": report["title"]}})
