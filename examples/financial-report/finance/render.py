"""The report as a self-contained HTML page, and the email that carries it."""

from __future__ import annotations

import html
import os
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from .sources import previous_month

ROOT = Path(__file__).resolve().parent.parent


def output_dir() -> Path:
    return Path(os.environ.get("STEPLINE_REPORT_OUTPUT_DIR") or ROOT / "output")


def outbox_dir() -> Path:
    return Path(os.environ.get("STEPLINE_REPORT_OUTBOX_DIR") or ROOT / "outbox")


def report_html(report_id: str, month: str, draft: dict[str, Any], numbers: dict[str, Any]) -> str:
    esc = html.escape
    before: dict[str, Any] = numbers.get("previousMonth") or {}
    before_costs: dict[str, Any] = before.get("costs", {})
    rows: list[tuple[str, float, float | None]] = [
        ("Revenue", numbers["revenue"], before.get("revenue")),
        *[(f"Costs: {k}", v, before_costs.get(k)) for k, v in numbers["costs"].items()],
        ("Total costs", numbers["totalCosts"], before.get("totalCosts")),
        ("Net income", numbers["netIncome"], before.get("netIncome")),
        ("Deals won (value)", numbers["dealsValue"], None),
        ("Pipeline", numbers["pipeline"], None),
        ("Cash", numbers["cash"], before.get("cash")),
    ]
    head = f"<th>Figure</th><th class=num>{esc(month)}</th>"
    if before:
        head += f"<th class=num>{esc(previous_month(month))}</th><th class=num>Change</th>"
    table = "\n".join(f"<tr><td>{esc(name)}</td>{_cells(value, was, bool(before))}</tr>" for name, value, was in rows)
    growth = numbers["revenueGrowth"]
    growth_text = "n/a" if growth is None else f"{growth:+.1%}"
    deals = "\n".join(f"<li>{esc(d['customer'])}: {d['amount']:,.2f}</li>" for d in numbers["topDeals"])
    highlights = "\n".join(f"<li>{esc(h)}</li>" for h in draft["highlights"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(draft["title"])}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; color: #1d2433; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }} .meta {{ color: #667; margin-top: 0; }}
table {{ border-collapse: collapse; width: 100%; }} th {{ text-align: left; color: #556; font-weight: 600; }}
th, td {{ padding: .3rem .6rem; border-bottom: 1px solid #e3e6ee; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.kpis {{ display: flex; gap: 1rem; }} .kpi {{ flex: 1; background: #f4f6fb; padding: .8rem; border-radius: 8px; }}
.kpi b {{ display: block; font-size: 1.3rem; }}
</style></head>
<body>
<h1>{esc(draft["title"])}</h1>
<p class="meta">Report {esc(report_id)} · approved</p>
<div class="kpis">
  <div class="kpi">Revenue<b>{numbers["revenue"]:,.0f}</b></div>
  <div class="kpi">Net income<b>{numbers["netIncome"]:,.0f}</b></div>
  <div class="kpi">Margin<b>{numbers["margin"]:.1%}</b></div>
  <div class="kpi">Growth<b>{growth_text}</b></div>
</div>
<h2>Summary</h2><p>{esc(draft["summary"])}</p>
<h2>Highlights</h2><ul>{highlights}</ul>
<h2>Figures</h2>
<table><thead><tr>{head}</tr></thead>
<tbody>{table}</tbody></table>
<h2>Top deals</h2><ol>{deals}</ol>
</body></html>
"""


def _cells(value: float, was: float | None, compare: bool) -> str:
    cells = f"<td class=num>{value:,.2f}</td>"
    if not compare:
        return cells
    if was is None:
        return cells + "<td class=num>&ndash;</td><td class=num>&ndash;</td>"
    return cells + f"<td class=num>{was:,.2f}</td><td class=num>{value - was:+,.2f}</td>"


def email(report_id: str, to: str, title: str, report: Path) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "reports@example.com"
    message["To"] = to
    message["Subject"] = title
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(idstring=report_id, domain="example.com")
    message.set_content(f"Hello,\n\nthe report {report_id} ({title}) is approved and attached.\n")
    message.add_attachment(report.read_text(encoding="utf-8"), subtype="html", filename=report.name)
    return message
