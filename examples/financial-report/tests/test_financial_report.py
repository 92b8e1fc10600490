"""The financial-report flow end to end, over HTTP against a real server."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from stepline import load_project
from stepline.testing import RunningApp, serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_REPORT_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("STEPLINE_REPORT_OUTBOX_DIR", str(tmp_path / "outbox"))


async def _request(app: RunningApp, month: str = "2026-10") -> dict[str, str]:
    response = await app.client.post("/reports", json={"month": month, "requestedBy": "ana@example.com"})
    assert response.status_code == 202, response.text
    await app.settle()
    body: dict[str, str] = response.json()
    return body


async def test_the_whole_flow_from_request_to_email(tmp_path: Path) -> None:
    async with serve(ROOT, database=tmp_path / "stepline.db") as app:
        accepted = await _request(app)
        report_id = accepted["reportId"]
        report = (await app.client.get(f"/reports/{report_id}")).json()
        assert report["status"] == "awaiting_approval"
        assert report["draft"]["title"] == "Financial report, 2026-10"
        assert report["figures"]["revenueGrowth"] is not None  # September is in the fixtures
        assert report["figures"]["netIncome"] == round(
            report["figures"]["revenue"] - report["figures"]["totalCosts"], 2
        )

        # the trace of the request shows the whole journey, both fetches in parallel, the join, the analysis
        trace = await app.trace(accepted["traceId"])
        ran = [r.step for r in trace if r.kind == "end" and r.data["status"] == "ok"]
        assert ran[0] == "RequestReport"
        assert {"FetchCrmData", "FetchAccountingData", "AnalyzeReport"} <= set(ran)
        assert ran.count("JoinReportData") == 2  # each fetch wakes the join; only one continues
        emits = [r.data["topic"] for r in trace if r.kind == "emit"]
        assert emits.count("report.data.ready") == 1

        approved = await app.client.post(f"/reports/{report_id}/approve")
        assert approved.status_code == 202
        await app.settle()
        report = (await app.client.get(f"/reports/{report_id}")).json()
        assert report["status"] == "sent"

    html = Path(report["reportPath"]).read_text()
    assert Path(report["reportPath"]).parent == tmp_path / "output"
    assert "Financial report, 2026-10" in html and f"{report['figures']['revenue']:,.2f}" in html
    eml = Path(report["emailPath"])
    assert eml.parent == tmp_path / "outbox"
    message = email.message_from_bytes(eml.read_bytes(), policy=default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "ana@example.com" and message["Subject"] == "Financial report, 2026-10"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"{report_id}.html"
    assert attachment.get_content() == html


async def test_rejecting_a_report(tmp_path: Path) -> None:
    async with serve(ROOT, database=tmp_path / "stepline.db") as app:
        report_id = (await _request(app))["reportId"]
        rejected = await app.client.post(f"/reports/{report_id}/reject", json={"reason": "costs look wrong"})
        assert rejected.status_code == 202
        await app.settle()
        report = (await app.client.get(f"/reports/{report_id}")).json()
    assert (report["status"], report["rejection"]) == ("rejected", "costs look wrong")
    assert not (tmp_path / "output").exists()


async def test_a_month_without_data_fails_with_the_reason(tmp_path: Path) -> None:
    async with serve(ROOT, database=tmp_path / "stepline.db") as app:
        report_id = (await _request(app, "2025-01"))["reportId"]
        report = (await app.client.get(f"/reports/{report_id}")).json()
    assert report["status"] == "failed"
    assert "has no data for 2025-01" in report["error"]


async def test_bad_requests_and_decisions(tmp_path: Path) -> None:
    async with serve(ROOT, database=tmp_path / "stepline.db") as app:
        bad_month = await app.client.post("/reports", json={"month": "October", "requestedBy": "ana@example.com"})
        assert bad_month.status_code == 400 and bad_month.json()["errors"][0]["path"] == "month"
        bad_email = await app.client.post("/reports", json={"month": "2026-10", "requestedBy": "ana"})
        assert bad_email.status_code == 400 and bad_email.json()["errors"][0]["path"] == "requestedBy"

        unknown = await app.client.post("/reports/rpt-nope/approve")
        assert unknown.status_code == 404 and unknown.json() == {"error": "no report rpt-nope"}
        assert (await app.client.get("/reports/rpt-nope")).status_code == 404

        report_id = (await _request(app))["reportId"]
        assert (await app.client.post(f"/reports/{report_id}/approve")).status_code == 202
        twice = await app.client.post(f"/reports/{report_id}/approve")
        assert twice.status_code == 409 and "not awaiting approval" in twice.json()["error"]
        late_reject = await app.client.post(f"/reports/{report_id}/reject", json={})
        assert late_reject.status_code == 409


def test_the_project_loads_without_warnings() -> None:
    project = load_project(ROOT)
    assert project.warnings == []
    assert len(project.steps) == 13
    assert {s.name for s in project.steps.values() if s.type == "noop"} == {"ApprovalGate"}
