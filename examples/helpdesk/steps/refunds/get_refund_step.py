"""GET /refunds/{orderId}: where a refund stands (requested, awaiting_approval, refunded, rejected, expired)."""

from stepline import ApiRequest, ApiResponse, Context

config = {
    "type": "api",
    "name": "GetRefund",
    "description": "Shows a refund: its amount, the policy's rule, its status and who decided",
    "path": "/refunds/{orderId}",
    "method": "GET",
    "flows": ["helpdesk"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    refund = await ctx.state.get("refunds", req.path_params["orderId"])
    if refund is None:
        return {"status": 404, "body": {"error": f"no refund of order {req.path_params['orderId']}"}}
    return {"status": 200, "body": refund}
