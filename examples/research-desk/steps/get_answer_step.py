"""Where the asker reads the answer (and, meanwhile, how far the desk has got)."""

from typing import Any

from stepline import ApiRequest, Context

config = {"type": "api", "name": "GetAnswer", "path": "/questions/{id}", "method": "GET", "flows": ["research-desk"]}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, Any]:
    items = await ctx.state.items(req.path_params["id"])
    if not items:
        return {"status": 404, "body": {"error": f"no question {req.path_params['id']}"}}
    return {"status": 200, "body": items}
