"""POST /reports: the entry point. Validates the request, records it, and starts the flow."""

import re
import uuid

from finance.progress import progress
from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from stepline import ApiConfig, ApiRequest, ApiResponse, Context

MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class ReportRequest(BaseModel):
    month: str = Field(
        description="The month to report on, YYYY-MM",
        examples=["2026-10"],
        json_schema_extra={"pattern": f"^{MONTH.pattern}$"},
    )
    requestedBy: str = Field(description="Who gets the report by email", examples=["ana@example.com"])

    # Validators rather than Field(pattern=...): the 400 then says what is expected, not a regex.
    @field_validator("month")
    @classmethod
    def _month(cls, value: str) -> str:
        if not MONTH.fullmatch(value):
            raise PydanticCustomError("month_format", "must be a month as YYYY-MM, like 2026-10")
        return value

    @field_validator("requestedBy")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL.fullmatch(value):
            raise PydanticCustomError("email_format", "must be an email address, like ana@example.com")
        return value


class Accepted(BaseModel):
    reportId: str
    traceId: str


# The typed form of a config; most other steps use the plain dict form. Both are validated at load.
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


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    report_id = f"rpt-{uuid.uuid4().hex[:10]}"
    await ctx.state.set(report_id, "request", req.body)
    await ctx.state.set(report_id, "status", "fetching")
    await progress(ctx, report_id, "fetching")
    await ctx.emit({"topic": "report.requested", "data": {"reportId": report_id, **req.body}})
    ctx.logger.info("report requested", {"reportId": report_id, **req.body})
    return {"status": 202, "body": {"reportId": report_id, "traceId": ctx.trace_id}}
