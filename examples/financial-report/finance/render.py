"""The report as a self-contained HTML page, and the email that carries it."""

from __future__ import annotations

import html
import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def output_dir() -> Path:
    return Path(os.environ.get("STEPLINE_REPORT_OUTPUT_DIR") or ROOT / "output")


def outbox_dir() -> Path:
    return Path(os.environ.get("STEPLINE_REPORT_OUTBOX_DIR") or ROOT / "outbox")


def report_html(report_id: str, month: str, draft: dict[str, Any], numbers: dict[str, Any]) -> str:
    esc = html.escape
    rows = [
        ("Revenue", numbers["revenue"]),
        *[(f"Costs: {k}", v) for k, v in numbers["costs"].items()],
        ("Total costs", numbers["totalCosts"]),
        ("Net income", numbers["netIncome"]),
        ("Deals won (value)", numbers["dealsValue"]),
        ("Pipeline", numbers["pipeline"]),
        ("Cash", numbers["cash"]),
    ]
    table = "\n".join(f"<tr><td>{esc(name)}</td><td class=num>{value:,.2f}</td></tr>" for name, value in rows)
    growth = numbers["revenueGrowth"]
    growth_text = "n/a" if growth is None else f"{growth:+.1%}"
    deals = "\n".join(f"<li>{esc(d['customer'])}: {d['amount']:,.2f}</li>" for d in numbers["topDeals"])
    highlights = "\n".join(f"<li>{esc(h)}</li>" for h in draft["highlights"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(draft["title"])}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; color: #1d2433; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }} .meta {{ color: #667; margin-top: 0; }}
table {{ border-collapse: collapse; width: 100%; }} td {{ padding: .3rem .6rem; border-bottom: 1px solid #e3e6ee; }}
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
<h2>Figures</h2><table>{table}</table>
<h2>Top deals</h2><ol>{deals}</ol>
</body></html>
"""


def email(report_id: str, to: str, title: str, report: Path) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "reports@example.com"
    message["To"] = to
    message["Subject"] = title
    message.set_content(f"Hello,\n\nthe report {report_id} ({title}) is approved and attached.\n")
    message.add_attachment(report.read_text(), subtype="html", filename=report.name)
    return message
