"""Drafts the report from the fetched data. Plain code today; an LLM agent with tools in a later version."""

from finance.figures import draft, figures

config = {
    "type": "event",
    "name": "AnalyzeReport",
    "description": "Computes the figures and drafts the report, then asks a human to approve it",
    "subscribes": ["report.data.ready"],
    "emits": ["report.draft.created"],
    "flows": ["financial-reporting"],
}


async def handler(input, ctx):
    report_id = input["reportId"]
    request = await ctx.state.get(report_id, "request")
    crm = await ctx.state.get(report_id, "crm")
    accounting = await ctx.state.get(report_id, "accounting")
    numbers = figures(crm, accounting, accounting.get("previous"))
    report = draft(request["month"], numbers)
    await ctx.state.set(report_id, "figures", numbers)
    await ctx.state.set(report_id, "draft", report)
    await ctx.state.set(report_id, "status", "awaiting_approval")
    ctx.logger.info("draft ready for approval", {"reportId": report_id, "netIncome": numbers["netIncome"]})
    await ctx.emit({"topic": "report.draft.created", "data": {"reportId": report_id, "title": report["title"]}})
