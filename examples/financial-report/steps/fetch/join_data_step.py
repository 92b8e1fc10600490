"""Fan-in: waits until both sources are in state, then lets the analysis start, exactly once."""

from .models import DataFetched

SOURCES = ("crm", "accounting")

config = {
    "type": "event",
    "name": "JoinReportData",
    "description": "Continues once both the CRM and the accounting data have arrived",
    "subscribes": ["report.data.fetched"],
    "emits": ["report.data.ready"],
    "input": DataFetched,
    "flows": ["financial-reporting"],
}


async def handler(input, ctx):
    report_id = input["reportId"]
    parts = await ctx.state.items(report_id)
    missing = [s for s in SOURCES if s not in parts]
    if missing:
        ctx.logger.info("waiting for the other source", {"reportId": report_id, "missing": missing})
        return
    # Both deliveries may see both parts (they run in parallel, and each may be retried): the atomic
    # compare-and-set lets exactly one of them continue.
    if await ctx.state.compare_and_set(report_id, "joined", None, True):
        await ctx.state.set(report_id, "status", "analyzing")
        await ctx.emit({"topic": "report.data.ready", "data": {"reportId": report_id}})
