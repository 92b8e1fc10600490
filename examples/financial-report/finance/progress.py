"""A report's progress, as an item of the `reportProgress` stream (steps/report/progress_stream.py): what
the live page (GET /reports/{id}/live) and any other client watching the report see change, as it happens."""

from __future__ import annotations

import time

from stepline import Context

GROUP = "reports"

MESSAGES = {
    "fetching": "Fetching the CRM and accounting data",
    "analyzing": "The analyst is reading the figures",
    "awaiting_approval": "The draft waits for a person's approval",
    "approved": "Approved: generating the report",
    "generated": "Report generated: sending the email",
    "sent": "Sent",
    "rejecting": "Rejected: recording why",
    "rejected": "Rejected",
    "expired": "No decision within 7 days: expired",
    "failed": "A source has no data for the month",
}


async def progress(ctx: Context, report_id: str, status: str, detail: str = "") -> None:
    """Set the report's progress item: every watcher of the report hears of it at once."""
    item = {"status": status, "message": MESSAGES[status], "detail": detail, "at": time.time()}
    await ctx.streams.reportProgress.set(GROUP, report_id, item)
