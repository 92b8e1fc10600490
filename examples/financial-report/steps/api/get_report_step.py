"""GET /reports/{id}: where a report stands, and its draft once there is one."""

from stepline import ApiRequest, ApiResponse, Context

config = {
    "type": "api",
    "name": "GetReport",
    "description": "Shows a report's status, draft and files",
    "path": "/reports/{id}",
    "method": "GET",
    "flows": ["financial-reporting"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    report_id = req.path_params["id"]
    report = await ctx.state.items(report_id)
    if "status" not in report:
        return {"status": 404, "body": {"error": f"no report {report_id}"}}
    shown = ("status", "request", "draft", "figures", "reportPath", "emailPath", "rejection", "errors")
    return {"status": 200, "body": {"reportId": report_id, **{k: report[k] for k in shown if k in report}}}
