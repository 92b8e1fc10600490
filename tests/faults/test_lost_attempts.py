"""Runs that never finish (their worker died) count as attempts, and live runs are never handed out twice.
Real `stepline start` processes, a handler that kills its own worker with os._exit, a handler that runs
longer than its visibility timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

from stepline import Stepline

from ..conftest import ProjectFactory, free_port
from ..durability.helpers import healthy, kill_group, probe, start_server, wait_until

SUICIDE = {
    "steps/go_step.py": """
        config = {"type": "api", "name": "Go", "path": "/go", "method": "POST", "emits": ["doomed"]}
        async def handler(req, ctx):
            await ctx.emit("doomed", {})
            return {"status": 202, "body": {"traceId": ctx.trace_id}}
    """,
    "steps/doomed_step.py": """
        import os
        config = {"type": "event", "name": "Doomed", "subscribes": ["doomed"],
                  "infrastructure": {"queue": {"maxRetries": 2, "visibilityTimeout": 1}}}
        async def handler(input, ctx):
            await ctx.state.increment("runs", "doomed")
            os._exit(1)  # the worker dies in the middle of the run, as a segfault or the OOM killer would
    """,
}


def test_a_handler_that_kills_its_worker_is_dead_lettered_after_its_last_attempt(
    make_project: ProjectFactory, tmp_path: Path, shared_store: str
) -> None:
    root = make_project(SUICIDE)
    port = free_port()
    # the supervisor restarts the dead
    server = start_server(root, port, tmp_path / "server.log", "--workers", "2", store=shared_store)
    with probe(shared_store, root) as store:
        try:
            wait_until(lambda: healthy(port), 30, "the server")
            r = httpx.post(f"http://127.0.0.1:{port}/go", timeout=10)
            assert r.status_code == 202
            # each death: a restart, a lease
            wait_until(lambda: bool(store.dead_letters()), 45, "the delivery to be dead-lettered")
            [dead] = store.dead_letters()
            assert dead.attempts == 4  # the claim that found the third attempt lost: it did not run
            assert "worker died during the run" in dead.error and "3 attempts" in dead.error
            time.sleep(3)  # and it stays there: not run again
            assert store.get("runs", "doomed") == 3  # maxRetries 2: three attempts, each lost, none more
            assert store.queued() == 0
        finally:
            kill_group(server)


SLOW = {
    "steps/slow_step.py": """
        import asyncio
        config = {"type": "event", "name": "Slow", "subscribes": ["slow"],
                  "infrastructure": {"handler": {"timeout": 10}, "queue": {"visibilityTimeout": 1}}}
        async def handler(input, ctx):
            await ctx.state.increment("starts", str(input["n"]))
            await asyncio.sleep(3)  # three times its visibility timeout, alive all along
            await ctx.state.increment("ends", str(input["n"]))
    """,
    "steps/go_step.py": """
        config = {"type": "api", "name": "Go", "path": "/go/{n}", "method": "POST", "emits": ["slow"]}
        async def handler(req, ctx):
            await ctx.emit("slow", {"n": int(req.path_params["n"])})
            return {"status": 202, "body": {}}
    """,
}


async def test_a_run_longer_than_its_visibility_timeout_is_not_handed_out_again(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """In one process: a lease that is renewed while the handler runs is never claimed again."""
    app = Stepline(make_project(SLOW), store=f"sqlite:///{tmp_path}/db.sqlite")
    async with app.lifespan():
        for n in range(4):
            await app.emit("slow", {"n": n})
        await app.settle(timeout=30)
        assert await app.engine.state.get_group("starts") == {str(n): 1 for n in range(4)}
        assert await app.engine.state.get_group("ends") == {str(n): 1 for n in range(4)}
        assert await app.dead_letters() == []


def test_across_workers_a_live_run_is_never_handed_out_twice(
    make_project: ProjectFactory, tmp_path: Path, shared_store: str
) -> None:
    root = make_project(SLOW)
    port = free_port()
    server = start_server(root, port, tmp_path / "server.log", "--workers", "2", store=shared_store)
    with probe(shared_store, root) as store:
        try:
            wait_until(lambda: healthy(port), 30, "the server")
            for n in range(6):
                assert httpx.post(f"http://127.0.0.1:{port}/go/{n}", timeout=10).status_code == 202
            wait_until(lambda: store.count("ends") == 6, 30, "every run to end")
            assert store.group("starts") == {str(n): 1 for n in range(6)}
            assert store.queued() == 0
        finally:
            kill_group(server)


def test_check_warns_when_a_timeout_exceeds_the_visibility_timeout(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/long_step.py": """
                config = {"type": "event", "name": "Long", "subscribes": ["t"],
                          "infrastructure": {"handler": {"timeout": 120}, "queue": {"visibilityTimeout": 30}}}
                async def handler(input, ctx):
                    pass
            """
        }
    )
    shown = subprocess.run(
        [sys.executable, "-m", "stepline", "check", "--dir", str(root), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    [warning] = [p for p in json.loads(shown.stdout)["problems"] if p["field"].startswith("infrastructure")]
    assert "120" in warning["message"] and "30" in warning["message"] and warning["severity"] == "warning"
    assert "visibilityTimeout" in warning["fix"]
