"""GET /hello/{traceId}: the greeting made for a request, once the background step has made it."""

from stepline import ApiRequest, ApiResponse, Context

config = {
    "type": "api",
    "name": "GetGreeting",
    "description": "Reads a greeting back",
    "path": "/hello/{traceId}",
    "method": "GET",
    "flows": ["hello"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    greeting = await ctx.state.get("greetings", req.path_params["traceId"])
    if greeting is None:
        return {"status": 404, "body": {"error": "no greeting yet for this trace"}}
    return {"status": 200, "body": {"greeting": greeting}}
