"""POST /reports/{id}/reject: the human's no, with an optional reason."""

from finance.progress import progress
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stepline import ApiRequest, ApiResponse, Context

from .decision import awaiting_decision


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("no reason given", min_length=1, max_length=1000)


config = {
    "type": "api",
    "name": "RejectReport",
    "description": "A reviewer rejects the drafted report, optionally saying why",
    "path": "/reports/:id/reject",
    "method": "POST",
    # No "bodySchema": with one, Stepline answers 400 to a request without a body, and the body is optional
    # here (`curl -XPOST .../reject` is a rejection without a reason). The handler validates it instead.
    "emits": ["report.decided"],
    "flows": ["financial-reporting"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    report_id = req.path_params["id"]
    try:
        rejection = Rejection.model_validate(req.body if req.body is not None else {})
    except ValidationError as exc:
        errors = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return {
            "status": 400,
            "body": {"error": "the request body is invalid", "errors": errors, "traceId": ctx.trace_id},
        }
    refused = await awaiting_decision(ctx, report_id)
    if refused:
        return refused
    if not await ctx.state.compare_and_set(report_id, "status", "awaiting_approval", "rejecting"):
        return {"status": 409, "body": {"error": f"report {report_id} was decided meanwhile"}}
    decision = {"reportId": report_id, "approved": False, "reason": rejection.reason}
    await ctx.emit({"topic": "report.decided", "data": decision})
    await progress(ctx, report_id, "rejecting", rejection.reason)
    ctx.logger.info("report rejected by the reviewer", {"reportId": report_id, "reason": rejection.reason})
    return {"status": 202, "body": {"reportId": report_id, "status": "rejecting"}}
