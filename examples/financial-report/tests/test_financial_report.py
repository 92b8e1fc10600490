"""The financial-report flow end to end, over HTTP against a real server (SQLite in a temporary folder)."""

from __future__ import annotations

import asyncio
import email
import json
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

from stepline import LLMSettings, load_project
from stepline.client import StreamClient
from stepline.core.durable import runs
from stepline.testing import Answer, FakeClock, RunningApp, ScriptedLLM, serve

ROOT = Path(__file__).resolve().parent.parent  # the example project, wherever pytest runs from
REQUESTER = "ana@example.com"


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningApp]:
    monkeypatch.setenv("STEPLINE_REPORT_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("STEPLINE_REPORT_OUTBOX_DIR", str(tmp_path / "outbox"))
    # No model: the analyst drafts from its template (the agent's own test below scripts a model).
    async with serve(ROOT, store=f"sqlite:///{tmp_path}/stepline.db", llm=LLMSettings()) as running:
        yield running


async def request_report(app: RunningApp, month: str = "2026-10") -> dict[str, str]:
    """POST /reports and wait until the flow has gone as far as it goes on its own."""
    response = await app.client.post("/reports", json={"month": month, "requestedBy": REQUESTER})
    assert response.status_code == 202, response.text
    body: dict[str, str] = response.json()
    assert set(body) == {"reportId", "traceId"}
    await app.settle()
    return body


async def get_report(app: RunningApp, report_id: str) -> dict[str, Any]:
    response = await app.client.get(f"/reports/{report_id}")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


# -- the happy path ---------------------------------------------------------------------------------


async def test_the_whole_flow_from_request_to_email(app: RunningApp, tmp_path: Path) -> None:
    report_id = (await request_report(app))["reportId"]
    report = await get_report(app, report_id)
    assert report["status"] == "awaiting_approval"
    assert report["draft"]["title"] == "Financial report, 2026-10"
    assert report["draft"]["summary"] and report["draft"]["highlights"]
    numbers = report["figures"]
    assert numbers["netIncome"] == round(numbers["revenue"] - numbers["totalCosts"], 2)
    assert numbers["revenueGrowth"] is not None  # September is in the fixtures
    assert len(numbers["topDeals"]) == 3

    approved = await app.client.post(f"/reports/{report_id}/approve")
    assert approved.status_code == 202
    assert approved.json() == {"reportId": report_id, "status": "approved"}
    await app.settle()
    report = await get_report(app, report_id)
    assert report["status"] == "sent"

    page = Path(report["reportPath"])
    assert page.parent == tmp_path / "output"
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and "<table>" in html
    assert "Financial report, 2026-10" in html
    for value in (numbers["revenue"], numbers["totalCosts"], numbers["netIncome"], *numbers["costs"].values()):
        assert f"{value:,.2f}" in html
    assert all(name in html for name in numbers["costs"])
    assert all(deal["customer"] in html for deal in numbers["topDeals"])
    assert "<th class=num>2026-09</th>" in html  # the month before, side by side
    assert f"{numbers['previousMonth']['revenue']:,.2f}" in html

    eml = Path(report["emailPath"])
    assert eml.parent == tmp_path / "outbox" and eml.suffix == ".eml"
    message = email.message_from_bytes(eml.read_bytes(), policy=default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == REQUESTER
    assert message["Subject"] == "Financial report, 2026-10"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/html"
    assert attachment.get_filename() == f"{report_id}.html"
    assert attachment.get_content() == html


async def test_the_request_trace_shows_the_fan_out_the_join_and_the_analysis(app: RunningApp) -> None:
    trace = await app.trace((await request_report(app))["traceId"])
    steps = {r.step for r in trace}
    assert {"RequestReport", "FetchCrmData", "FetchAccountingData", "JoinReportData", "AnalyzeReport"} <= steps
    assert not steps & {"ReportFetchFailed", "GenerateReport", "EmailReport"}

    emits = [r for r in trace if r.kind == "emit"]
    [requested] = [r for r in emits if r.data["topic"] == "report.requested"]
    assert sorted(requested.data["subscribers"]) == ["FetchAccountingData", "FetchCrmData"]  # fan-out
    fetched = sorted(r.data["data"]["source"] for r in emits if r.data["topic"] == "report.data.fetched")
    assert fetched == ["accounting", "crm"]
    # fan-in: each fetch wakes the join, both runs succeed, only one lets the analysis start
    joins = [r for r in trace if r.kind == "end" and r.step == "JoinReportData"]
    assert [r.data["status"] for r in joins] == ["ok", "ok"]
    assert [r.step for r in emits if r.data["topic"] == "report.data.ready"] == ["JoinReportData"]
    assert [r.data["status"] for r in trace if r.kind == "end" and r.step == "AnalyzeReport"] == ["ok"]


async def test_the_analyst_agent_reads_the_data_computes_with_a_tool_and_drafts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLINE_REPORT_OUTPUT_DIR", str(tmp_path / "output"))
    draft = {
        "title": "Financial report, 2026-10",
        "summary": "A good month.",
        "highlights": ["Revenue up.", "Costs flat.", "Three big deals."],
    }
    with ScriptedLLM(
        Answer.tool_calls_of([("read_data", {"source": "crm"}), ("read_data", {"source": "accounting"})]),
        Answer.tool_call("compute_figures", {}),
        "Revenue grew; costs held; the pipeline is healthy.",
        json.dumps({"title": "Financial report, 2026-10", "summary": "A good month.", "highlights": ["Revenue up."]}),
        json.dumps(draft),  # the first draft had one highlight, not three: repaired
    ) as llm:
        async with serve(ROOT, store=f"sqlite:///{tmp_path}/stepline.db", llm=llm.settings()) as app:
            ids = await request_report(app)
            report = await get_report(app, ids["reportId"])
            trace = await app.trace(ids["traceId"])
    assert report["status"] == "awaiting_approval" and report["draft"] == draft
    tools = [(r.data["tool"], r.data["status"]) for r in trace if r.kind == "tool"]
    assert tools == [("read_data", "ok"), ("read_data", "ok"), ("compute_figures", "ok")]
    calls = [r.data["call"] for r in trace if r.kind == "llm"]
    assert calls == ["tools", "tools", "tools", "structured", "structured"]
    # the model got the real data and figures back from its tools
    computed = json.loads(llm.requests[2]["messages"][-1]["content"])
    assert computed == report["figures"]
    assert "dealsWon" in llm.requests[1]["messages"][-2]["content"]


async def test_the_gate_waits_holding_no_worker_and_the_request_trace_tells_it_all(app: RunningApp) -> None:
    requested = await request_report(app)
    report_id = requested["reportId"]
    [waiting] = await runs(app.stepline.engine.control)
    assert waiting["step"] == "ApprovalGate" and waiting["status"] == "suspended"
    assert waiting["waiting"]["match"] == {"reportId": report_id}
    assert (await app.stepline.engine.queue.stats()).in_flight == 0
    approved = await app.client.post(f"/reports/{report_id}/approve")
    await app.settle()
    decided = [r.step for r in await app.trace(approved.headers["x-trace-id"]) if r.kind == "end"]
    assert decided == ["ApproveReport"]
    trace = await app.trace(requested["traceId"])
    ran = [(r.step, r.data["status"]) for r in trace if r.kind == "end" and r.step != "JoinReportData"]
    assert ran[-4:] == [
        ("ApprovalGate", "suspended"),
        ("ApprovalGate", "ok"),
        ("GenerateReport", "ok"),
        ("EmailReport", "ok"),
    ]
    assert await runs(app.stepline.engine.control) == []


async def test_a_report_no_one_decides_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    async with serve(ROOT, store=f"sqlite:///{tmp_path}/stepline.db", llm=LLMSettings(), clock=clock) as app:
        report_id = (await request_report(app))["reportId"]
        clock.advance(7 * 86400 + 1)
        await app.settle()
        assert (await get_report(app, report_id))["status"] == "expired"
        assert await runs(app.stepline.engine.control) == []


async def test_the_first_month_has_no_growth_figure(app: RunningApp) -> None:
    report = await get_report(app, (await request_report(app, "2026-07"))["reportId"])
    assert report["status"] == "awaiting_approval"
    assert report["figures"]["revenueGrowth"] is None
    assert any("no earlier month" in h for h in report["draft"]["highlights"])


async def test_the_join_continues_once_when_both_parts_arrive_at_once(app: RunningApp) -> None:
    report_id = "rpt-race"
    fixtures = {name: json.loads((ROOT / "fixtures" / f"{name}.json").read_text()) for name in ("crm", "accounting")}
    state = app.stepline.engine.state
    await state.set(report_id, "request", {"month": "2026-10", "requestedBy": REQUESTER})
    await state.set(report_id, "crm", fixtures["crm"]["2026-10"])
    await state.set(report_id, "accounting", fixtures["accounting"]["2026-10"])
    await state.set(report_id, "status", "fetching")

    traces = await asyncio.gather(
        app.emit("report.data.fetched", {"reportId": report_id, "source": "crm"}),
        app.emit("report.data.fetched", {"reportId": report_id, "source": "accounting"}),
    )
    await app.settle()
    records = [r for trace_id in traces for r in await app.trace(trace_id)]
    assert len([r for r in records if r.kind == "end" and r.step == "JoinReportData"]) == 2
    assert len([r for r in records if r.kind == "emit" and r.data["topic"] == "report.data.ready"]) == 1
    assert len([r for r in records if r.kind == "end" and r.step == "AnalyzeReport"]) == 1
    # both runs saw both parts (they were in state before either ran): the marker decided, not the timing
    said = [r.data["message"] for r in records if r.kind == "log" and r.step == "JoinReportData"]
    assert sorted(said) == ["both sources in; analysis starts", "the other delivery already continued"]
    assert await app.state(report_id, "status") == "awaiting_approval"


# -- the other endings ------------------------------------------------------------------------------


async def test_rejecting_a_report_records_the_reason(app: RunningApp, tmp_path: Path) -> None:
    report_id = (await request_report(app))["reportId"]
    rejected = await app.client.post(f"/reports/{report_id}/reject", json={"reason": "costs look wrong"})
    assert rejected.status_code == 202
    await app.settle()
    report = await get_report(app, report_id)
    assert (report["status"], report["rejection"]) == ("rejected", "costs look wrong")
    assert "reportPath" not in report
    assert not (tmp_path / "output").exists() and not (tmp_path / "outbox").exists()


async def test_rejecting_without_a_body_gives_no_reason(app: RunningApp) -> None:
    report_id = (await request_report(app))["reportId"]
    assert (await app.client.post(f"/reports/{report_id}/reject")).status_code == 202
    await app.settle()
    report = await get_report(app, report_id)
    assert (report["status"], report["rejection"]) == ("rejected", "no reason given")


async def test_a_month_without_data_fails_with_the_reasons(app: RunningApp) -> None:
    report_id = (await request_report(app, "2025-01"))["reportId"]
    report = await get_report(app, report_id)
    assert report["status"] == "failed"
    assert sorted(report["errors"]) == ["accounting", "crm"]
    assert all("has no data for 2025-01" in error for error in report["errors"].values())
    assert "draft" not in report
    assert (await app.client.post(f"/reports/{report_id}/approve")).status_code == 409


# -- requests that are refused ----------------------------------------------------------------------


@pytest.mark.parametrize("month", ["October", "2026-13", "2026-1", "26-10", "2026-10-01", ""])
async def test_a_bad_month_is_a_400(app: RunningApp, month: str) -> None:
    response = await app.client.post("/reports", json={"month": month, "requestedBy": REQUESTER})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error == {"path": "month", "message": "must be a month as YYYY-MM, like 2026-10"}


@pytest.mark.parametrize(
    ("body", "path"),
    [({"month": "2026-10", "requestedBy": "ana"}, "requestedBy"), ({"month": "2026-10"}, "requestedBy")],
)
async def test_a_bad_requester_is_a_400(app: RunningApp, body: dict[str, str], path: str) -> None:
    response = await app.client.post("/reports", json=body)
    assert response.status_code == 400
    assert [e["path"] for e in response.json()["errors"]] == [path]


async def test_a_bad_rejection_body_is_a_400(app: RunningApp) -> None:
    report_id = (await request_report(app))["reportId"]
    response = await app.client.post(f"/reports/{report_id}/reject", json={"reason": ""})
    assert response.status_code == 400 and response.json()["errors"][0]["path"] == "reason"
    assert await app.state(report_id, "status") == "awaiting_approval"


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_deciding_an_unknown_report_is_a_404(app: RunningApp, action: str) -> None:
    response = await app.client.post(f"/reports/rpt-nope/{action}")
    assert response.status_code == 404
    assert response.json() == {"error": "no report rpt-nope"}


async def test_getting_an_unknown_report_is_a_404(app: RunningApp) -> None:
    response = await app.client.get("/reports/rpt-nope")
    assert response.status_code == 404 and response.json() == {"error": "no report rpt-nope"}


async def test_approving_twice_is_a_409(app: RunningApp) -> None:
    report_id = (await request_report(app))["reportId"]
    assert (await app.client.post(f"/reports/{report_id}/approve")).status_code == 202
    twice = await app.client.post(f"/reports/{report_id}/approve")
    assert twice.status_code == 409
    assert "not awaiting approval" in twice.json()["error"]
    assert (await app.client.post(f"/reports/{report_id}/reject", json={})).status_code == 409
    await app.settle()
    assert (await get_report(app, report_id))["status"] == "sent"


# -- the project itself -----------------------------------------------------------------------------


def test_the_project_loads_without_warnings() -> None:
    # Every topic is both emitted and heard (report.decided by the gate's wait_for): nothing to warn about.
    project = load_project(ROOT)
    assert project.warnings == []
    assert len(project.steps) == 14
    assert list(project.streams) == ["reportProgress"]
    assert project.waited_topics >= {"report.decided"}
    assert project.flows == ["financial-reporting"]
    assert all(s.config.description for s in project.steps.values())


# -- progress, live ----------------------------------------------------------------------------------


async def test_a_client_watching_a_report_sees_each_turn_as_it_happens(app: RunningApp) -> None:
    """The reportProgress stream: what the live page (GET /reports/{id}/live) shows, as any client sees it."""
    response = await app.client.post("/reports", json={"month": "2026-10", "requestedBy": REQUESTER})
    report_id = response.json()["reportId"]
    async with StreamClient(app.url) as client:
        watch = await client.item("reportProgress", "reports", report_id)
        seen = [watch.state["status"]] if watch.state else []
        await app.settle()
        await app.client.post(f"/reports/{report_id}/approve")
        await app.settle()
        while seen[-1:] != ["sent"]:
            message = await watch.next(10)
            seen.append(message.data["status"])
    # Each turn in order (one may be missed only if it was replaced before it was sent, never reordered).
    order = ["fetching", "analyzing", "awaiting_approval", "approved", "generated", "sent"]
    assert seen == sorted(set(seen), key=order.index) and seen[-1] == "sent"
    assert {"awaiting_approval", "sent"} <= set(seen)
    page = await app.client.get(f"/reports/{report_id}/live")
    assert page.status_code == 200 and "/__stepline/streams/client.js" in page.text
