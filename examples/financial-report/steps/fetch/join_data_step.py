"""Fan-in: each fetch wakes this step; the analysis starts once both parts are in state, exactly once."""

from typing import Any

from finance.events import SOURCES, DataFetched
from finance.progress import progress

from stepline import Context, EventConfig

# The typed form of an event step's config (most steps here use the plain dict form; both are checked at load).
config = EventConfig(
    name="JoinReportData",
    description="Continues once both the CRM and the accounting data have arrived",
    subscribes=["report.data.fetched"],
    emits=["report.data.ready"],
    input=DataFetched,
    flows=["financial-reporting"],
)


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id = input["reportId"]
    parts = await ctx.state.items(report_id)
    if "errors" in parts:
        ctx.logger.info("a source failed; not joining", {"reportId": report_id, "failed": sorted(parts["errors"])})
        return
    missing = [source for source in SOURCES if source not in parts]
    if missing:
        ctx.logger.info("waiting for the other source", {"reportId": report_id, "arrived": input["source"]})
        return
    # Both deliveries can see both parts: the fetches run in parallel, so can their two join deliveries, and
    # either may be retried. A per-report marker, set once by an atomic compare-and-set (atomic in the memory
    # engine and, as one SQLite transaction, across `stepline start --workers N`), lets exactly one go on.
    if not await ctx.state.compare_and_set(report_id, "joined", None, True):
        ctx.logger.info("the other delivery already continued", {"reportId": report_id})
        return
    await ctx.state.set(report_id, "status", "analyzing")
    await progress(ctx, report_id, "analyzing")
    ctx.logger.info("both sources in; analysis starts", {"reportId": report_id, "wokenBy": input["source"]})
    await ctx.emit({"topic": "report.data.ready", "data": {"reportId": report_id}})
