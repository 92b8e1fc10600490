"""The JavaScript stream client in a real headless Chromium: the financial-report example's live page
follows a report as it moves, with no reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from stepline import LLMSettings
from stepline.testing import serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "financial-report"

pytestmark = pytest.mark.timeout(120)


async def test_the_live_report_page_follows_the_report(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLINE_REPORT_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("STEPLINE_REPORT_OUTBOX_DIR", str(tmp_path / "outbox"))
    async with serve(EXAMPLE, store=f"sqlite:///{tmp_path}/stepline.db", llm=LLMSettings()) as app:
        response = await app.client.post("/reports", json={"month": "2026-10", "requestedBy": "ana@example.com"})
        report_id = response.json()["reportId"]
        await app.settle()
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{app.url}/reports/{report_id}/live")
        status = page.locator("#status")
        await expect(status).to_have_text("The draft waits for a person's approval")  # the snapshot
        await app.client.post(f"/reports/{report_id}/approve")
        await expect(status).to_have_text("Sent", timeout=15_000)  # pushed, no reload
        log = await page.locator("#log li").all_inner_texts()
        assert any(line.startswith("Approved") for line in log)
        await page.close()
        assert errors == []
