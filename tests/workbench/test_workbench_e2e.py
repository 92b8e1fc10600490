"""The Workbench in a real headless Chromium (Debian's), against the financial-report example app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from stepline import LLMSettings, load_project
from stepline.http.admin import STATIC
from stepline.testing import RunningApp, serve
from tests.stores import drop_redis_prefix, redis_url

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "financial-report"
ARTIFACTS = ROOT / "test-artifacts" / "workbench"

pytestmark = [
    pytest.mark.skipif(not (STATIC / "index.html").exists(), reason="the Workbench is not built: make install"),
    pytest.mark.timeout(120),
]


@pytest.fixture(params=["sqlite", "redis"])
async def app(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningApp]:
    """The example app on the default store, and on Redis (where the live view reads the store's feed)."""
    monkeypatch.setenv("STEPLINE_REPORT_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("STEPLINE_REPORT_OUTBOX_DIR", str(tmp_path / "outbox"))
    store = f"sqlite:///{tmp_path}/stepline.db" if request.param == "sqlite" else redis_url(tmp_path)
    try:
        async with serve(EXAMPLE, store=store, llm=LLMSettings()) as running:
            yield running
    finally:
        if request.param == "redis":
            drop_redis_prefix(store)


@pytest.fixture
async def page(app: RunningApp, browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1500, "height": 950})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{app.url}/__workbench/")
    yield page
    await context.close()
    assert errors == [], errors


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def test_the_graph_shows_every_step_and_every_topic_edge(page: Page) -> None:
    project = load_project(EXAMPLE)
    nodes = page.get_by_test_id("graph-node")
    await expect(nodes).to_have_count(len(project.steps))
    shown = {await n.get_attribute("data-step") for n in await nodes.all()}
    assert shown == set(project.steps)
    edges = page.locator(".react-flow__edge")
    await expect(edges).to_have_count(len(project.edges()))
    virtual = sum(1 for e in project.edges() if e.virtual)
    await expect(page.locator(".react-flow__edge.virtual")).to_have_count(virtual)
    await expect(page.locator(".react-flow__edge-text", has_text="report.data.ready")).to_have_count(1)
    await expect(page.locator(".node-noop")).to_have_count(len(project.noop_steps))
    await shot(page, "graph")

    # a node opens its details
    await page.locator('[data-step="RequestReport"]').click()
    await expect(page.get_by_test_id("step-RequestReport")).to_contain_text("POST /reports")


async def start_report_from_the_tester(page: Page) -> str:
    await page.get_by_test_id("tab-endpoints").click()
    tester = page.get_by_test_id("tester-RequestReport")
    await tester.get_by_test_id("field-body.month").fill("2026-10")
    await tester.get_by_test_id("field-body.requestedBy").fill("ana@example.com")
    await tester.get_by_test_id("send").click()
    await expect(tester.get_by_test_id("response")).to_contain_text("202")
    await tester.get_by_test_id("response-trace").click()
    view = page.get_by_test_id("trace-view")
    await expect(view).to_be_visible()
    trace_id = await view.get_attribute("data-trace-id")
    assert trace_id
    return trace_id


async def test_the_endpoint_tester_starts_a_flow_whose_trace_arrives_live(page: Page) -> None:
    trace_id = await start_report_from_the_tester(page)
    # the flow runs on after the response: the timeline fills in from the live feed
    bars = page.get_by_test_id("waterfall-bar")
    for step in ("RequestReport", "FetchCrmData", "FetchAccountingData", "JoinReportData", "AnalyzeReport"):
        await expect(bars.and_(page.locator(f'[data-step="{step}"]')).first).to_be_visible(timeout=15_000)
    await expect(page.get_by_test_id("mark-emit").first).to_be_visible()
    # the join runs twice at once (one per source); both runs end, neither is left drawn as running
    await expect(bars.and_(page.locator('[data-step="JoinReportData"]'))).to_have_count(2)
    await expect(page.locator(".bar.running")).to_have_count(0)
    await expect(page.locator(f'[data-testid="trace-row"][data-trace-id="{trace_id}"]')).to_be_visible()
    # the approval gate waits for a person: drawn as suspended, with what it waits for
    gate = bars.and_(page.locator('[data-step="ApprovalGate"]'))
    await expect(gate.get_by_test_id("lane-status")).to_have_text("suspended")
    await expect(gate.get_by_test_id("lane-waiting")).to_contain_text("suspended: waiting for report.decided")
    await expect(page.locator(".bar.suspended")).to_have_count(1)
    await expect(page.locator(".node.hit")).to_have_count(6)  # the path the trace took, on its graph
    await shot(page, "trace")


async def test_the_runs_tab_shows_a_waiting_run_and_cancels_it(page: Page, app: RunningApp) -> None:
    report = (await app.client.post("/reports", json={"month": "2026-10", "requestedBy": "ana@example.com"})).json()
    await app.settle()
    await page.get_by_test_id("tab-runs").click()
    run = page.get_by_test_id("run")
    await expect(run).to_have_count(1)
    await expect(run).to_contain_text("ApprovalGate")
    await expect(run).to_have_attribute("data-status", "suspended")
    waiting = run.get_by_test_id("run-waiting")
    await expect(waiting).to_contain_text(f'waiting for report.decided matching {{"reportId":"{report["reportId"]}"}}')
    await expect(waiting).to_contain_text("until")
    await shot(page, "runs")
    await run.get_by_test_id("run-cancel").click()
    await expect(page.get_by_test_id("runs-note")).to_contain_text("Cancelling ApprovalGate")
    await app.settle()
    await expect(run).to_have_count(0, timeout=10_000)
    ends = [r for r in await app.trace(report["traceId"]) if r.kind == "end" and r.step == "ApprovalGate"]
    assert ends[-1].data["status"] == "cancelled" and "Workbench" in ends[-1].data["error"]


async def test_logs_filter_by_trace(page: Page, app: RunningApp) -> None:
    first = await start_report_from_the_tester(page)
    other = (await app.client.post("/reports", json={"month": "2026-09", "requestedBy": "bo@example.com"})).json()
    await app.settle()
    await page.get_by_test_id("tab-logs").click()
    trace_filter = page.get_by_test_id("log-trace")
    await expect(trace_filter).to_have_value(first)  # opened from a trace: filtered to it already
    await trace_filter.fill("")
    lines = page.get_by_test_id("log-line")
    await expect(lines.filter(has_text=other["traceId"][-8:]).first).to_be_visible()
    await trace_filter.fill(first)
    await expect(lines.filter(has_text=other["traceId"][-8:])).to_have_count(0)
    await expect(lines.first).to_be_visible()
    # One read of every link's text: the live log re-renders as records arrive, and a handle to one line
    # (locator.all()) can go stale between reading the list and reading a line's text.
    shown = await lines.locator("a").all_inner_texts()
    assert shown and all(first.endswith(text) for text in shown)
    await page.get_by_test_id("log-level").select_option("info")
    await expect(lines.first).to_be_visible()
    await shot(page, "logs")


async def test_a_dead_letter_is_replayed_from_the_page(page: Page, app: RunningApp) -> None:
    # An event the analysis cannot take (no reportId): its input check dead-letters it at once.
    await app.stepline.emit("report.data.ready", {"month": "2026-10"})
    await app.settle()
    await page.get_by_test_id("tab-dead").click()
    letter = page.get_by_test_id("dead-letter")
    await expect(letter).to_have_count(1)
    await expect(letter).to_contain_text("AnalyzeReport")
    await letter.get_by_test_id("replay-one").click()
    await expect(page.get_by_test_id("replay-note")).to_have_text("Replayed 1.")
    await app.settle()
    (dead,) = await app.stepline.dead_letters()
    records = await app.trace(dead.event.trace_id)
    assert [r.kind for r in records].count("dead_letter") == 2  # it ran again, and failed again, visibly


async def test_a_state_value_is_edited(page: Page, app: RunningApp) -> None:
    report = (await app.client.post("/reports", json={"month": "2026-10", "requestedBy": "ana@example.com"})).json()
    await app.settle()
    await page.get_by_test_id("tab-state").click()
    await page.get_by_test_id("state-groups").get_by_text(report["reportId"]).click()
    item = page.locator('[data-testid="state-item"][data-key="status"]')
    await expect(item.get_by_test_id("state-value")).to_have_text('"awaiting_approval"')
    await item.get_by_test_id("state-edit").click()
    await item.get_by_test_id("state-editor").fill('"on_hold"')
    await item.get_by_test_id("state-save").click()
    await expect(item.get_by_test_id("state-value")).to_have_text('"on_hold"')
    assert await app.state(report["reportId"], "status") == "on_hold"


async def test_the_streams_tab_shows_a_group_s_items_live(page: Page, app: RunningApp) -> None:
    report = (await app.client.post("/reports", json={"month": "2026-10", "requestedBy": "ana@example.com"})).json()
    await app.settle()
    await page.get_by_test_id("tab-streams").click()
    stream = page.get_by_test_id("stream-reportProgress")
    await expect(stream).to_contain_text("Where each report stands, live")
    await expect(stream).to_contain_text("progress_stream.py")
    await expect(stream).to_contain_text("open")
    group = page.get_by_test_id("stream-group-reportProgress-reports")
    await expect(group).to_contain_text("reports")
    await group.click()
    items = page.get_by_test_id("stream-items")
    await expect(items.get_by_test_id("stream-live")).to_have_text("live")
    row = items.locator(f'[data-testid="stream-item"][data-id="{report["reportId"]}"]')
    status = row.locator('[data-field="status"]')
    await expect(status).to_have_text("awaiting_approval")
    await expect(row.locator('[data-field="message"]')).to_have_text("The draft waits for a person's approval")
    # the approval runs the flow on: the row follows it over the WebSocket, without a reload
    approved = await app.client.post(f"/reports/{report['reportId']}/approve")
    assert approved.status_code == 202
    await app.settle()
    await expect(status).to_have_text("sent", timeout=10_000)
    await expect(items.get_by_test_id("stream-live")).to_have_text("live")
    await expect(items.get_by_test_id("stream-note")).to_have_count(0)
    await expect(group.locator('[data-field="watchers"]')).to_have_text("1")  # the page itself
    await shot(page, "streams")


async def test_a_refused_stream_is_polled_and_an_open_one_shows_its_events(browser: Browser, tmp_path: Path) -> None:
    root = tmp_path / "streams"
    (root / "steps").mkdir(parents=True)
    (root / "steps" / "board_stream.py").write_text(
        'config = {"name": "board", "description": "Open to all", "schema": {"type": "object"}}\n'
    )
    (root / "steps" / "secret_stream.py").write_text(
        'config = {"name": "secret", "description": "Nobody may watch", "schema": {"type": "object"}}\n'
        "def can_access(subscription, auth):\n    return False\n"
    )
    (root / "steps" / "poke_step.py").write_text(
        'config = {"type": "api", "name": "Poke", "path": "/poke/:n", "method": "POST"}\n'
        "async def handler(req, ctx):\n"
        '    n = int(req.path_params["n"])\n'
        '    await ctx.streams.secret.set("g", "a", {"n": n})\n'
        '    await ctx.streams.board.set("g", "a", {"n": n, "tags": ["x", n]})\n'
        '    await ctx.streams.board.send({"groupId": "g"}, {"type": "ping", "data": {"n": n}})\n'
        '    return {"status": 200, "body": {"n": n}}\n'
    )
    async with serve(root, store=f"sqlite:///{tmp_path}/stepline.db") as app:
        assert (await app.client.post("/poke/1")).status_code == 200
        page = await browser.new_page(viewport={"width": 1500, "height": 950})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{app.url}/__workbench/")
        await page.get_by_test_id("tab-streams").click()
        await expect(page.get_by_test_id("stream-secret")).to_contain_text("access checked")
        await page.get_by_test_id("stream-group-secret-g").click()
        items = page.get_by_test_id("stream-items")
        await expect(items.get_by_test_id("stream-live")).to_have_attribute("data-mode", "polling")
        await expect(items.get_by_test_id("stream-note")).to_have_text(
            "live updates refused: access to secret/g denied; refreshing every 2 s"
        )
        cell = items.locator('[data-testid="stream-item"][data-id="a"] [data-field="n"]')
        await expect(cell).to_have_text("1")
        assert (await app.client.post("/poke/2")).status_code == 200
        await expect(cell).to_have_text("2", timeout=6_000)  # re-read, not pushed
        await shot(page, "streams-refused")
        # an open stream: live, nested values as JSON, and the group's ephemeral events
        await page.get_by_test_id("stream-group-board-g").click()
        await expect(items).to_have_attribute("data-stream", "board")
        await expect(items.get_by_test_id("stream-live")).to_have_text("live")
        assert (await app.client.post("/poke/3")).status_code == 200
        row = items.locator('[data-testid="stream-item"][data-id="a"]')
        await expect(row.locator('[data-field="tags"]')).to_have_text('["x",3]')
        await expect(items.get_by_test_id("stream-event")).to_have_count(1)
        await expect(items.get_by_test_id("stream-event")).to_contain_text('ping{"n":3}')
        await expect(items.get_by_test_id("stream-note")).to_have_count(0)
        board = page.get_by_test_id("stream-group-board-g")
        await expect(board.locator('[data-field="seq"]')).to_have_text("3")  # the list's counts follow
        await expect(board.locator('[data-field="watchers"]')).to_have_text("1")
        await shot(page, "streams-events")
        await page.close()
        assert errors == [], errors


async def test_a_graph_of_60_steps_is_laid_out_without_overlaps(browser: Browser, tmp_path: Path) -> None:
    root = tmp_path / "big"
    (root / "steps").mkdir(parents=True)
    (root / "steps" / "start_step.py").write_text(
        'config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["t0"]}\n'
        "async def handler(req, ctx):\n    return None\n"
    )
    for i in range(59):  # a chain with a branch every fifth step
        emits = [f"t{i + 1}"] + ([f"side{i}"] if i % 5 == 0 else [])
        subscribes = [f"t{i}"] if i % 5 != 1 else [f"t{i}", f"side{i - 1}"]
        (root / "steps" / f"s{i}_step.py").write_text(
            f'config = {{"type": "event", "name": "S{i}", "subscribes": {subscribes}, "emits": {emits}}}\n'
            "async def handler(input, ctx):\n    return None\n"
        )
    async with serve(root, store="memory://") as app:
        page = await browser.new_page(viewport={"width": 1500, "height": 950})
        await page.goto(f"{app.url}/__workbench/")
        nodes = page.get_by_test_id("graph-node")
        await expect(nodes).to_have_count(60)
        boxes = [await n.bounding_box() for n in await nodes.all()]
        assert all(b is not None for b in boxes)
        overlaps = [
            (i, j)
            for i, a in enumerate(boxes)
            for j, b in enumerate(boxes[i + 1 :], i + 1)
            if a
            and b
            and a["x"] < b["x"] + b["width"]
            and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"]
            and b["y"] < a["y"] + a["height"]
        ]
        assert overlaps == []
        await page.close()
