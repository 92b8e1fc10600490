"""Fetches the month's books from accounting (a fixture here). Runs in parallel with the CRM fetch."""

from finance import sources

from .models import ReportRequested

config = {
    "type": "event",
    "name": "FetchAccountingData",
    "description": "Reads revenue, costs and cash for the month, and the month before for growth",
    "subscribes": ["report.requested"],
    "emits": ["report.data.fetched", "report.data.fetch_failed"],
    "input": ReportRequested,
    "flows": ["financial-reporting"],
    "infrastructure": {"handler": {"timeout": 20}, "queue": {"maxRetries": 3}},
}


async def handler(input, ctx):
    report_id = input["reportId"]
    try:
        data = sources.accounting(input["month"])
    except sources.MonthNotFound as exc:
        await ctx.emit({"topic": "report.data.fetch_failed", "data": {"reportId": report_id, "error": str(exc)}})
        return
    data = {**data, "previous": sources.accounting_or_none(sources.previous_month(input["month"]))}
    await ctx.state.set(report_id, "accounting", data)
    ctx.logger.info("accounting data fetched", {"reportId": report_id, "revenue": data["revenue"]})
    await ctx.emit({"topic": "report.data.fetched", "data": {"reportId": report_id, "source": "accounting"}})
