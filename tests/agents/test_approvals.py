"""Human in the loop: a step asks, a person decides through an API step, or the request times out."""

from __future__ import annotations

from pathlib import Path

from stepline.testing import FakeClock, RunningApp, serve

from ..conftest import ProjectFactory

FLOW = {
    "steps/propose_step.py": """
        config = {"type": "api", "name": "Propose", "path": "/drafts/{id}", "method": "POST",
                  "emits": ["draft.decided"]}
        async def handler(req, ctx):
            await ctx.approvals.request("draft", req.path_params["id"], topic="draft.decided",
                                        data={"text": req.body["text"]}, timeout=req.body.get("timeout"))
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/decide_step.py": """
        config = {"type": "api", "name": "Decide", "path": "/drafts/{id}/decision", "method": "POST",
                  "emits": ["draft.decided"]}
        async def handler(req, ctx):
            approval = await ctx.approvals.decide("draft", req.path_params["id"], approved=req.body["approved"],
                                                  by=req.body["by"])
            if approval is None:
                return {"status": 409, "body": {"error": "nothing is waiting for a decision"}}
            return {"status": approval.status}
    """,
    "steps/pending_step.py": """
        config = {"type": "api", "name": "Pending", "path": "/approvals", "method": "GET"}
        async def handler(req, ctx):
            return [a.to_dict() for a in await ctx.approvals.pending()]
    """,
    "steps/act_step.py": """
        config = {"type": "event", "name": "Act", "subscribes": ["draft.decided"]}
        async def handler(input, ctx):
            approval = await ctx.approvals.settle(input)
            if approval is None:
                await ctx.state.increment("stale", input["approval"]["key"])
                return
            await ctx.state.set("outcome", approval.key, {"status": approval.status, "by": approval.by,
                                                          "trace": ctx.trace_id, "text": approval.data["text"]})
    """,
}


async def decide(app: RunningApp, key: str, approved: bool = True) -> int:
    r = await app.client.post(f"/drafts/{key}/decision", json={"approved": approved, "by": "ada"})
    return r.status_code


async def test_a_decision_after_a_restart_continues_the_trace_that_asked(make_project: ProjectFactory) -> None:
    root: Path = make_project(FLOW)
    async with serve(root) as app:
        r = await app.client.post("/drafts/d1", json={"text": "Q3 report"})
        trace_id = r.json()["traceId"]
        await app.settle()
    async with serve(root) as app:  # hours later, another process: the request is still there
        (pending,) = (await app.client.get("/approvals")).json()
        assert (pending["key"], pending["status"], pending["data"]) == ("d1", "pending", {"text": "Q3 report"})
        assert await decide(app, "d1", approved=False) == 200
        await app.settle()
        assert await app.state("outcome", "d1") == {
            "status": "rejected",
            "by": "ada",
            "trace": trace_id,
            "text": "Q3 report",
        }
        assert (await app.client.get("/approvals")).json() == []
        assert await decide(app, "d1") == 409  # decided once only
        kinds = [(r.kind, r.step) for r in await app.trace(trace_id)]
    assert ("emit", "Decide") in kinds and ("start", "Act") in kinds


async def test_no_decision_in_time_takes_the_timeout_path(make_project: ProjectFactory, store: str) -> None:
    clock = FakeClock()
    async with serve(make_project(FLOW), store=store, clock=clock) as app:
        await app.client.post("/drafts/d2", json={"text": "late", "timeout": 86400})
        await app.settle()
        assert await app.state("outcome", "d2") is None  # nobody decided, and the day has not passed
        clock.advance(86400)
        await app.settle()
        assert (await app.state("outcome", "d2"))["status"] == "timeout"
        assert await decide(app, "d2") == 409


async def test_a_decision_before_the_timeout_wins_and_the_timeout_does_nothing(make_project: ProjectFactory) -> None:
    clock = FakeClock()
    async with serve(make_project(FLOW), store="memory://", clock=clock) as app:
        await app.client.post("/drafts/d3", json={"text": "quick", "timeout": 3600})
        assert await decide(app, "d3") == 200
        clock.advance(3600)
        await app.settle()
        assert (await app.state("outcome", "d3"))["status"] == "approved"
        assert await app.state("stale", "d3") == 1  # the timeout event came, and was told it was too late


async def test_asking_twice_while_pending_is_an_error(make_project: ProjectFactory) -> None:
    async with serve(make_project(FLOW), store="memory://") as app:
        assert (await app.client.post("/drafts/d4", json={"text": "a"})).status_code == 202
        r = await app.client.post("/drafts/d4", json={"text": "b"})
        assert r.status_code == 500
        (end,) = [x.data for x in await app.trace(r.headers["x-trace-id"]) if x.kind == "end"]
    assert "approval draft/d4 is already pending" in end["error"]
