"""Sends the report to whoever asked for it. "Sends" = writes an .eml file into the outbox folder."""

from pathlib import Path
from typing import Any

from finance.events import ReportGenerated
from finance.progress import progress
from finance.render import email, outbox_dir

from stepline import Context

config = {
    "type": "event",
    "name": "EmailReport",
    "description": "Emails the report to the requester (an .eml file in the outbox folder)",
    "subscribes": ["report.generated"],
    "emits": [],
    "input": ReportGenerated,
    "flows": ["financial-reporting"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id = input["reportId"]
    request = await ctx.state.get(report_id, "request")
    draft = await ctx.state.get(report_id, "draft")
    message = email(report_id, request["requestedBy"], draft["title"], Path(input["path"]))
    folder = outbox_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report_id}.eml"
    path.write_bytes(bytes(message))  # one file per report: a retry overwrites it, it does not send twice
    await ctx.state.set(report_id, "emailPath", str(path))
    await ctx.state.set(report_id, "status", "sent")
    await progress(ctx, report_id, "sent")
    ctx.logger.info("report emailed", {"reportId": report_id, "to": request["requestedBy"], "path": str(path)})
