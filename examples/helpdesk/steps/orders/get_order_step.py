"""GET /orders/{id}: an order, for the shop's pages and for the support agent, which calls this very step
as a tool (`Tool.step("GetOrder")` in steps/support/message_step.py)."""

from helpdesk.orders import find_order

from stepline import ApiRequest, ApiResponse, Context

config = {
    "type": "api",
    "name": "GetOrder",
    # The model reads this description to know what the tool does: write it for the model.
    "description": "Look up an order by its number (like A-1002): the item, the total paid, the delivery status",
    "path": "/orders/{id}",
    "method": "GET",
    "flows": ["helpdesk"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    order = find_order(req.path_params["id"])
    if order is None:
        return {"status": 404, "body": {"error": f"no order {req.path_params['id']}"}}
    # Only what a support answer needs: the customer's email stays out of the model's context.
    shown = ("id", "item", "total", "status", "deliveredOn")
    return {"status": 200, "body": {key: order[key] for key in shown}}
