"""Sends the report to whoever asked for it. "Sends" = writes an .eml file into the outbox folder."""

from pathlib import Path

from finance.render import email, outbox_dir

config = {
    "type": "event",
    "name": "EmailReport",
    "description": "Emails the report to the requester (into the outbox folder)",
    "subscribes": ["report.generated"],
    "emits": [],
    "flows": ["financial-reporting"],
}


async def handler(input, ctx):
    report_id = input["reportId"]
    request = await ctx.state.get(report_id, "request")
    draft = await ctx.state.get(report_id, "draft")
    message = email(report_id, request["requestedBy"], draft["title"], Path(input["path"]))
    folder = outbox_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report_id}.eml"
    path.write_bytes(bytes(message))
    await ctx.state.set(report_id, "emailPath", str(path))
    await ctx.state.set(report_id, "status", "sent")
    ctx.logger.info("report emailed", {"reportId": report_id, "to": request["requestedBy"]})
