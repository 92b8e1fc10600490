"""Fetches the month's sales from the CRM (a fixture here). Runs in parallel with the accounting fetch."""

from typing import Any

from finance import sources
from finance.events import ReportRequested

from stepline import Context

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


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id = input["reportId"]
    try:
        data = sources.crm(input["month"])
    except sources.MonthNotFound as exc:
        # No data is an answer, not an outage: retrying cannot help, so say so instead of raising.
        ctx.logger.warn("no CRM data for the month", {"reportId": report_id, "month": input["month"]})
        await ctx.emit(
            {"topic": "report.data.fetch_failed", "data": {"reportId": report_id, "source": "crm", "error": str(exc)}}
        )
        return
    await ctx.state.set(report_id, "crm", data)
    ctx.logger.info(
        "CRM data fetched", {"reportId": report_id, "dealsWon": len(data["dealsWon"]), "pipeline": data["pipeline"]}
    )
    await ctx.emit({"topic": "report.data.fetched", "data": {"reportId": report_id, "source": "crm"}})
