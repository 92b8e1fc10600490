"""Writes the approved report as a self-contained HTML file."""

from typing import Any

from finance.events import ReportRef
from finance.progress import progress
from finance.render import output_dir, report_html

from stepline import Context

config = {
    "type": "event",
    "name": "GenerateReport",
    "description": "Renders the approved report to an HTML file in the output folder",
    "subscribes": ["report.approved"],
    "emits": ["report.generated"],
    "input": ReportRef,
    "flows": ["financial-reporting"],
}


async def handler(input: dict[str, Any], ctx: Context) -> None:
    report_id = input["reportId"]
    request = await ctx.state.get(report_id, "request")
    page = report_html(
        report_id, request["month"], await ctx.state.get(report_id, "draft"), await ctx.state.get(report_id, "figures")
    )
    folder = output_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report_id}.html"
    path.write_text(page, encoding="utf-8")  # the same content on a retry: writing twice is harmless
    await ctx.state.set(report_id, "reportPath", str(path))
    await progress(ctx, report_id, "generated")
    ctx.logger.info("report written", {"reportId": report_id, "path": str(path), "bytes": len(page)})
    await ctx.emit({"topic": "report.generated", "data": {"reportId": report_id, "path": str(path)}})
