"""Fetches the month's books from accounting (a fixture here). Runs in parallel with the CRM fetch."""

from typing import Any

from finance import sources
from finance.events import ReportRequested

from stepline import Context

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


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id, month = input["reportId"], input["month"]
    try:
        data = sources.accounting(month)
    except sources.MonthNotFound as exc:
        ctx.logger.warn("no accounting data for the month", {"reportId": report_id, "month": month})
        await ctx.emit(
            {
                "topic": "report.data.fetch_failed",
                "data": {"reportId": report_id, "source": "accounting", "error": str(exc)},
            }
        )
        return
    # The month before, when accounting has it, for the growth figures (the first month has none).
    data = {**data, "previous": sources.accounting_or_none(sources.previous_month(month))}
    await ctx.state.set(report_id, "accounting", data)
    ctx.logger.info(
        "accounting data fetched",
        {"reportId": report_id, "revenue": data["revenue"], "previousMonth": data["previous"] is not None},
    )
    await ctx.emit({"topic": "report.data.fetched", "data": {"reportId": report_id, "source": "accounting"}})
