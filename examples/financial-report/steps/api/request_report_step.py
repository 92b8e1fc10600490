"""POST /reports: the entry point. Validates the request, records it, and starts the flow."""

import uuid

from pydantic import BaseModel, Field

from stepline import ApiConfig


class ReportRequest(BaseModel):
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="The month to report on, YYYY-MM")
    requestedBy: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="Who gets the report")


class Accepted(BaseModel):
    reportId: str
    traceId: str


# The typed form of a config; the other steps use the plain dict form. Both are validated at load.
config = ApiConfig(
    name="RequestReport",
    description="Accepts a report request and fans out to the data sources",
    path="/reports",
    method="POST",
    body_schema=ReportRequest,
    response_schema={202: Accepted},
    emits=["report.requested"],
    flows=["financial-reporting"],
)


async def handler(req, ctx):
    report_id = f"rpt-{uuid.uuid4().hex[:10]}"
    await ctx.state.set(report_id, "request", req.body)
    await ctx.state.set(report_id, "status", "fetching")
    await ctx.emit({"topic": "report.requested", "data": {"reportId": report_id, **req.body}})
    ctx.logger.info("report requested", {"reportId": report_id, "month": req.body["month"]})
    return {"status": 202, "body": {"reportId": report_id, "traceId": ctx.trace_id}}
