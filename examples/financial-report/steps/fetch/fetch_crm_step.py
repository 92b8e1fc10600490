"""Fetches the month's sales from the CRM (a fixture here). Runs in parallel with the accounting fetch."""

from finance import sources

from .models import ReportRequested

config = {
    "type": "event",
    "name": "FetchCrmData",
    "description": "Reads deals won, pipeline and customers for the month from the CRM",
    "subscribes": ["report.requested"],
    "emits": ["report.data.fetched", "report.data.fetch_failed"],
    "input": ReportRequested,
    "flows": ["financial-reporting"],
    "infrastructure": {"handler": {"timeout": 20}, "queue": {"maxRetries": 3}},
}


async def handler(input, ctx):
    report_id = input["reportId"]
    try:
        data = sources.crm(input["month"])
    except sources.MonthNotFound as exc:
        await ctx.emit({"topic": "report.data.fetch_failed", "data": {"reportId": report_id, "error": str(exc)}})
        return
    await ctx.state.set(report_id, "crm", data)
    ctx.logger.info("CRM data fetched", {"reportId": report_id, "deals": len(data["dealsWon"])})
    await ctx.emit({"topic": "report.data.fetched", "data": {"reportId": report_id, "source": "crm"}})
