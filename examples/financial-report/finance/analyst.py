"""The analyst agent: reads the fetched data and computes the figures with tools, then drafts the report
as a structured model. With no model configured (the offline demo), `draft` writes it from a template."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stepline import Context

from .figures import draft

ANALYST = (
    "You are the financial analyst of a small company. Read the month's CRM and accounting data with "
    "read_data, and get every number from compute_figures: never do arithmetic yourself. Be factual and brief."
)


class ReportDraft(BaseModel):
    title: str = Field(description='"Financial report, <month>"')
    summary: str = Field(description="three or four sentences for the management team")
    highlights: list[str] = Field(min_length=3, max_length=6, description="one figure-backed line each")


async def write_draft(ctx: Context, report_id: str, month: str, numbers: dict[str, Any]) -> dict[str, Any]:
    if ctx.llm.settings.model is None:
        ctx.logger.info("no model configured ([llm] in stepline.toml): drafting from the template")
        return draft(month, numbers)

    async def read_data(source: Literal["crm", "accounting"]) -> Any:
        """The data fetched for this report from one source.

        Args:
            source: "crm" (deals, pipeline, customers) or "accounting" (revenue, costs, cash)
        """
        return await ctx.state.get(report_id, source)

    def compute_figures() -> dict[str, Any]:
        """Revenue, costs, net income, margin, growth on the month before, deals: every figure of the report."""
        return numbers

    notes = await ctx.llm.run(
        f"Prepare the financial report for {month}: gather the data and the figures, then list what matters.",
        system=ANALYST,
        tools=[read_data, compute_figures],
        max_turns=6,
    )
    request = {"role": "user", "content": f"Now write the report for {month} from those figures."}
    report = await ctx.llm.structured([*notes.messages, request], ReportDraft)
    return report.model_dump()
