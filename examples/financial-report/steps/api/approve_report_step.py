"""POST /reports/{id}/approve: the human's yes. The approval gate, waiting on `report.decided`, resumes."""

from finance.progress import progress

from stepline import ApiRequest, ApiResponse, Context

from .decision import awaiting_decision

config = {
    "type": "api",
    "name": "ApproveReport",
    "description": "A reviewer approves the drafted report; the report is generated and emailed",
    "path": "/reports/:id/approve",
    "method": "POST",
    "emits": ["report.decided"],
    "flows": ["financial-reporting"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    report_id = req.path_params["id"]
    refused = await awaiting_decision(ctx, report_id)
    if refused:
        return refused
    # compare-and-set: of two approvals racing, exactly one goes through
    if not await ctx.state.compare_and_set(report_id, "status", "awaiting_approval", "approved"):
        return {"status": 409, "body": {"error": f"report {report_id} was decided meanwhile"}}
    await ctx.emit({"topic": "report.decided", "data": {"reportId": report_id, "approved": True}})
    await progress(ctx, report_id, "approved")
    ctx.logger.info("report approved", {"reportId": report_id})
    return {"status": 202, "body": {"reportId": report_id, "status": "approved"}}
