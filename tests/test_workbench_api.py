"""The Workbench's JSON API on its own: reading the system, acting on it, live records, and its guard."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from stepline.testing import RunningApp, serve

from .conftest import ProjectFactory

API = "/__stepline/api"

PROJECT = {
    "steps/order_step.py": """
        from pydantic import BaseModel

        class Order(BaseModel):
            sku: str

        config = {"type": "api", "name": "PlaceOrder", "path": "/orders", "method": "POST", "bodySchema": Order,
                  "emits": ["order.placed"], "flows": ["shop"]}
        async def handler(req, ctx):
            ctx.logger.info("order taken", {"sku": req.body["sku"]})
            await ctx.emit("order.placed", req.body)
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/ship_step.py": """
        config = {"type": "event", "name": "Ship", "subscribes": ["order.placed"], "flows": ["shop"],
                  "infrastructure": {"queue": {"maxRetries": 0}}}
        async def handler(input, ctx):
            if await ctx.state.get("couriers", "available") is None:
                ctx.logger.warn("no courier", {"sku": input["sku"]})
                raise RuntimeError("no courier")
            await ctx.state.set("shipped", input["sku"], True)
    """,
    "steps/nightly_step.py": """
        config = {"type": "cron", "name": "Nightly", "cron": "0 3 * * *", "flows": ["shop"]}
        async def handler(ctx):
            await ctx.state.increment("nightly", "runs")
    """,
}


async def order(app: RunningApp, sku: str) -> str:
    r = await app.client.post("/orders", json={"sku": sku})
    assert r.status_code == 202
    await app.settle()
    return str(r.json()["traceId"])


async def test_the_graph_and_a_steps_details(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT), store="memory://") as app:
        await order(app, "tea")
        graph = (await app.client.get(f"{API}/graph")).json()
        assert {s["name"] for s in graph["steps"]} == {"PlaceOrder", "Ship", "Nightly"}
        assert graph["edges"] == [{"source": "PlaceOrder", "target": "Ship", "topic": "order.placed", "virtual": False}]
        ship = (await app.client.get(f"{API}/steps/Ship")).json()
        assert ship["trigger"] == "on order.placed" and ship["file"].endswith("ship_step.py")
        assert ship["errorRate"] == 1.0 and ship["recentRuns"][0]["status"] == "error"
        place = (await app.client.get(f"{API}/steps/PlaceOrder")).json()
        assert place["schemas"]["body"]["required"] == ["sku"]
        assert (await app.client.get(f"{API}/steps/Nope")).status_code == 404


async def test_traces_logs_and_their_filters(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT), store="memory://") as app:
        first, second = await order(app, "tea"), await order(app, "coffee")
        listed = (await app.client.get(f"{API}/traces")).json()
        assert {t["traceId"] for t in listed} == {first, second} and all(t["errors"] for t in listed)
        trace = (await app.client.get(f"{API}/traces/{first}")).json()
        assert trace["stopped"] is False and {r["kind"] for r in trace["records"]} >= {"trigger", "emit", "log"}
        logs = (await app.client.get(f"{API}/logs", params={"trace": first})).json()
        assert [log["data"]["message"] for log in logs] == ["order taken", "no courier"]
        warnings = (await app.client.get(f"{API}/logs", params={"level": "warn"})).json()
        assert {w["traceId"] for w in warnings} == {first, second}
        coffee = (await app.client.get(f"{API}/logs", params={"text": "coffee", "step": "Ship"})).json()
        assert [(c["traceId"], c["step"]) for c in coffee] == [(second, "Ship")]


async def test_state_dead_letters_replay_emit_and_cron(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT), store="memory://") as app:
        await order(app, "tea")
        (dead,) = (await app.client.get(f"{API}/dead-letters")).json()
        assert dead["step"] == "Ship" and dead["error"] == "RuntimeError: no courier" and dead["data"] == {"sku": "tea"}

        r = await app.client.put(f"{API}/state/couriers/available", content=json.dumps(["ada"]))
        assert r.status_code == 200
        assert (await app.client.get(f"{API}/state/couriers")).json() == {"available": ["ada"]}
        assert "couriers" in (await app.client.get(f"{API}/state")).json()
        assert (await app.client.put(f"{API}/state/couriers/x", content="{nope")).status_code == 400

        r = await app.client.post(f"{API}/dead-letters/replay", json={"ids": [dead["id"]]})
        assert r.json() == {"replayed": 1, "ids": [dead["id"]]}
        await app.settle()
        assert await app.state("shipped", "tea") is True
        assert (await app.client.get(f"{API}/dead-letters")).json() == []

        r = await app.client.post(f"{API}/emit", json={"topic": "order.placed", "data": {"sku": "mug"}})
        assert r.status_code == 202 and r.json()["subscribers"] == ["Ship"]
        await app.settle()
        assert await app.state("shipped", "mug") is True
        assert (await app.client.post(f"{API}/emit", json={"data": 1})).status_code == 400

        assert (await app.client.post(f"{API}/cron/Nightly/run")).status_code == 202
        await app.settle()  # a run asked for now is a delivery like a tick's
        assert await app.state("nightly", "runs") == 1
        assert (await app.client.post(f"{API}/cron/Ship/run")).status_code == 404

        assert (await app.client.delete(f"{API}/state/couriers/available")).status_code == 204
        assert (await app.client.delete(f"{API}/state/couriers/available")).status_code == 404


async def test_stopping_a_trace_from_the_page(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT), store="memory://") as app:
        trace_id = await order(app, "tea")
        assert (
            await app.client.post(f"{API}/traces/{trace_id}/stop", json={"reason": "looks wrong"})
        ).status_code == 200
        assert (await app.client.get(f"{API}/traces/{trace_id}")).json()["stopped"] is True
        assert (await app.client.post(f"{API}/traces/{trace_id}/resume")).status_code == 200
        assert (await app.client.post(f"{API}/traces/{trace_id}/resume")).status_code == 404


async def test_live_records_arrive_over_server_sent_events(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT), store="memory://") as app:
        async with app.client.stream("GET", f"{API}/live") as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)) == ": connected"
            posted = asyncio.create_task(app.client.post("/orders", json={"sku": "tea"}))
            data = ""
            while not data.startswith("data: "):
                data = await asyncio.wait_for(anext(lines), 5)
            trace_id = (await posted).json()["traceId"]
        records = json.loads(data.removeprefix("data: "))
        assert {r["traceId"] for r in records} == {trace_id}
        assert records[0]["kind"] == "trigger"


@pytest.mark.parametrize(
    ("token", "sent", "status"),
    [(None, None, 403), ("s3cret", None, 401), ("s3cret", "nope", 401), ("s3cret", "s3cret", 200)],
)
async def test_in_start_mode_the_api_is_off_or_needs_the_token(
    make_project: ProjectFactory, token: str | None, sent: str | None, status: int
) -> None:
    async with serve(make_project(PROJECT), store="memory://", dev=False, admin_token=token) as app:
        headers = {"authorization": f"Bearer {sent}"} if sent else {}
        r = await app.client.get(f"{API}/graph", headers=headers)
        assert r.status_code == status
        if status != 200:
            assert (
                await app.client.post(f"{API}/emit", json={"topic": "order.placed"}, headers=headers)
            ).status_code == status


async def test_no_cross_origin_reads(make_project: ProjectFactory) -> None:
    async with serve(make_project(PROJECT), store="memory://") as app:
        r = await app.client.get(f"{API}/graph", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(("dev", "token", "status"), [(True, None, 200), (False, None, 403), (False, "s3cret", 200)])
async def test_the_page_is_served_in_dev_and_off_in_start_without_a_token(
    make_project: ProjectFactory, dev: bool, token: str | None, status: int
) -> None:
    from stepline.http.admin import STATIC

    if not (STATIC / "index.html").exists():
        pytest.skip("the Workbench is not built: make install")
    async with serve(make_project(PROJECT), store="memory://", dev=dev, admin_token=token) as app:
        r = await app.client.get("/__workbench/")
    assert r.status_code == status
    if status == 200:
        assert "<title>Stepline Workbench</title>" in r.text


async def test_one_shape_for_traces_on_every_path_and_in_the_cli(make_project: ProjectFactory) -> None:
    """The admin API, its older paths and `stepline traces --json` answer with the same records."""
    root = make_project(PROJECT)
    async with serve(root) as app:
        trace_id = await order(app, "tea")
        listed = [(await app.client.get(f"{p}/traces")).json() for p in (API, "/__workbench/api", "/__stepline")]
        assert listed[0] == listed[1] == listed[2]
        assert set(listed[0][0]) == {"traceId", "entry", "startedAt", "lastAt", "durationMs", "records", "errors"}
        shown = [(await app.client.get(f"{p}/traces/{trace_id}")).json() for p in (API, "/__stepline")]
        assert shown[0] == shown[1] and shown[0]["stopped"] is False
        records = shown[0]["records"]
        assert {tuple(r) for r in records} == {("traceId", "kind", "step", "ts", "data")}
        bad = await app.client.get(f"{API}/traces", params={"limit": "many"})
        assert bad.status_code == 400 and "whole number" in bad.json()["error"]
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stepline", "traces", "--dir", str(root), "--json"],
        capture_output=True,
        text=True,
    )
    assert json.loads(cli.stdout) == listed[0]
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stepline", "traces", "show", trace_id, "--dir", str(root), "--json"],
        capture_output=True,
        text=True,
    )
    assert json.loads(cli.stdout) == records
