"""A cron tick is a delivery like any event's: a tick whose worker dies mid-run runs again, a tick that fails
is retried and dead-lettered, and each tick is published once however many workers see it."""

from __future__ import annotations

from pathlib import Path

from stepline import Stepline

from ..conftest import ProjectFactory, free_port
from ..durability.helpers import healthy, kill_group, probe, start_server, wait_until

CRASHING_TICK = {
    "steps/tick_step.py": """
        import os
        config = {"type": "cron", "name": "Tick", "cron": "*/2 * * * * *",
                  "infrastructure": {"handler": {"timeout": 1}, "queue": {"visibilityTimeout": 2}}}
        async def handler(ctx):
            # A tick's retry keeps its trace id: count the runs of each tick.
            await ctx.state.increment("runs", ctx.trace_id)
            if await ctx.state.compare_and_set("crashed", "tick", None, ctx.trace_id):
                os._exit(1)  # the first tick is killed mid-run (only that one: a crash kills its neighbours too)
            await ctx.state.set("done", ctx.trace_id, True)
    """,
}


def test_a_cron_tick_killed_mid_run_runs_again(make_project: ProjectFactory, tmp_path: Path, shared_store: str) -> None:
    root = make_project(CRASHING_TICK)
    port = free_port()
    server = start_server(root, port, tmp_path / "server.log", "--workers", "2", store=shared_store)
    with probe(shared_store, root) as store:
        try:
            wait_until(lambda: healthy(port), 30, "the server")

            def crashed_tick_done() -> bool:
                trace_id = store.get("crashed", "tick")
                return bool(trace_id and store.get("done", trace_id))

            wait_until(crashed_tick_done, 40, "the killed tick to run again")
            assert store.get("runs", store.get("crashed", "tick")) == 2  # the same tick: once killed, once done
            # Two workers see every tick: each ran once, or (killed with the crashing one) once more, never again.
            assert max(store.group("runs").values()) == 2
        finally:
            kill_group(server)


FAILING_TICK = {
    "steps/tick_step.py": """
        config = {"type": "cron", "name": "Tick", "cron": "0 0 1 1 *",
                  "infrastructure": {"queue": {"maxRetries": 1, "backoff": {"initial": 0.05}}}}
        async def handler(ctx):
            await ctx.state.increment("runs", "tick")
            raise RuntimeError("the report server is down")
    """,
}


async def test_a_failing_cron_tick_is_retried_and_dead_lettered(make_project: ProjectFactory, store: str) -> None:
    app = Stepline(make_project(FAILING_TICK), dev=True, store=store)
    async with app.lifespan():
        step = app.project.steps["Tick"]
        trace_id = await app.engine.run_cron(step)  # "run now": a delivery like a tick's
        await app.settle(timeout=10)
        assert await app.engine.state.get("runs", "tick") == 2  # the run and its one retry
        [dead] = await app.dead_letters()
        assert dead.step == "Tick" and dead.event.trace_id == trace_id and "report server is down" in dead.error
        assert await app.replay() == 1  # and it can be replayed like any dead letter
        await app.settle(timeout=10)
        assert await app.engine.state.get("runs", "tick") == 4


async def test_every_worker_publishes_a_tick_and_one_gets_through(
    make_project: ProjectFactory, shared_store: str
) -> None:
    """Two engines on one store publish the same tick: the idempotency key lets one delivery through."""
    root = make_project(FAILING_TICK)
    apps = [Stepline(root, store=shared_store) for _ in range(2)]
    step = apps[0].project.steps["Tick"]
    published = [await app.engine.publish_cron(step, 1_767_225_600.0) for app in apps]
    assert sum(p is not None for p in published) == 1
    assert (await apps[0].adapters.queue.stats()).ready == 1
    for app in apps:
        await app.adapters.close()
