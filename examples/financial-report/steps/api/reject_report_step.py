"""POST /reports/{id}/reject: the human's no, with a reason."""

from pydantic import BaseModel

from .decision import awaiting_decision


class Rejection(BaseModel):
    reason: str = "no reason given"


config = {
    "type": "api",
    "name": "RejectReport",
    "description": "A reviewer rejects the drafted report",
    "path": "/reports/:id/reject",
    "method": "POST",
    "bodySchema": Rejection,
    "emits": ["report.rejected"],
    "flows": ["financial-reporting"],
}


async def handler(req, ctx):
    report_id = req.path_params["id"]
    refused = await awaiting_decision(ctx, report_id)
    if refused:
        return refused
    if not await ctx.state.compare_and_set(report_id, "status", "awaiting_approval", "rejecting"):
        return {"status": 409, "body": {"error": f"report {report_id} was decided meanwhile"}}
    await ctx.emit({"topic": "report.rejected", "data": {"reportId": report_id, "reason": req.body["reason"]}})
    return {"status": 202, "body": {"reportId": report_id, "status": "rejecting"}}
