"""POST /hello: accepts a name and hands the greeting off to a background step."""

from pydantic import BaseModel, Field

from stepline import ApiRequest, ApiResponse, Context


class HelloRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)


config = {
    "type": "api",
    "name": "HelloApi",
    "description": "Accepts a name to greet",
    "path": "/hello",
    "method": "POST",
    "bodySchema": HelloRequest,  # a body that does not match gets a 400 with the field errors
    "emits": ["hello.requested"],
    "flows": ["hello"],
}


async def handler(req: ApiRequest, ctx: Context) -> ApiResponse:
    # Emitting returns at once; the greeting is made in the background, durably, with retries.
    await ctx.emit({"topic": "hello.requested", "data": {"name": req.body["name"]}})
    ctx.logger.info("greeting requested", {"name": req.body["name"]})
    # The trace id ties together everything this request causes, in every step.
    return {"status": 202, "body": {"traceId": ctx.trace_id}}
