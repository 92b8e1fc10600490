"""Hot reload: a changed step file serves at once, queued events survive, a broken edit keeps the last good version."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

from stepline import Stepline
from stepline.testing import serve

from .conftest import ProjectFactory, free_port

HELLO = """
config = {"type": "api", "name": "Hello", "path": "/hello", "method": "GET"}
async def handler(req, ctx):
    return {"status": 200, "body": {"version": %d}}
"""


async def test_reload_swaps_code_and_keeps_the_last_good_version(make_project: ProjectFactory) -> None:
    root = make_project({"steps/hello_step.py": HELLO % 1})
    async with serve(root) as app:
        assert (await app.client.get("/hello")).json() == {"version": 1}
        (root / "steps/hello_step.py").write_text(HELLO % 2)
        assert app.stepline.reload() == []
        assert (await app.client.get("/hello")).json() == {"version": 2}

        (root / "steps/hello_step.py").write_text("config = {\n")
        problems = app.stepline.reload()
        assert [(p.file, p.line) for p in problems] == [("steps/hello_step.py", 1)]
        assert (await app.client.get("/hello")).json() == {"version": 2}  # still the last good one

        (root / "steps/bye_step.py").write_text(HELLO.replace("Hello", "Bye").replace("/hello", "/bye") % 3)
        (root / "steps/hello_step.py").write_text(HELLO % 4)
        assert app.stepline.reload() == []
        assert (await app.client.get("/hello")).json() == {"version": 4}
        assert (await app.client.get("/bye")).json() == {"version": 3}


async def test_queued_events_are_not_lost_across_a_reload(make_project: ProjectFactory) -> None:
    worker = """
import asyncio
config = {"type": "event", "name": "Work", "subscribes": ["job"]}
async def handler(input, ctx):
    await asyncio.sleep(0.02)
    await ctx.state.set("done", str(input), %r)
"""
    root = make_project({"steps/work_step.py": worker % "old"})
    sl = Stepline(root, concurrency=1)
    async with sl.lifespan():
        for i in range(20):
            await sl.emit("job", i)
        await asyncio.sleep(0.1)  # a few ran with the old code; the rest are queued
        (root / "steps/work_step.py").write_text(worker % "new")
        assert sl.reload() == []
        await sl.settle()
        done = await sl.engine.state.get_group("done")
    assert sorted(done, key=int) == [str(i) for i in range(20)]
    assert "old" in done.values() and "new" in done.values()
    assert done["19"] == "new"


def _wait_for(predicate: object, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if predicate():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_stepline_dev_reloads_changed_and_broken_files(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project({"steps/hello_step.py": HELLO % 1})
    port = free_port()
    log = tmp_path / "dev.log"
    stepline_bin = Path(sys.executable).parent / "stepline"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(stepline_bin), "dev", "--dir", str(root), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    url = f"http://127.0.0.1:{port}/hello"
    try:
        _wait_for(lambda: httpx.get(url).json() == {"version": 1}, 20, "the dev server")
        assert f"http://127.0.0.1:{port}" in log.read_text()

        (root / "steps/hello_step.py").write_text(HELLO % 2)
        _wait_for(lambda: httpx.get(url).json() == {"version": 2}, 20, "the changed file to serve")

        (root / "steps/hello_step.py").write_text(HELLO.replace("async def", "async def def") % 3)
        _wait_for(lambda: "reload failed" in log.read_text(), 20, "the reload error")
        text = log.read_text()
        assert "steps/hello_step.py:3" in text and "syntax error" in text
        assert httpx.get(url).json() == {"version": 2}  # the last good version keeps serving

        (root / "steps/hello_step.py").write_text(HELLO % 4)
        _wait_for(lambda: httpx.get(url).json() == {"version": 4}, 20, "the fixed file to serve")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()
