"""`ctx.run_code`: Python in a separate process, with time, CPU and memory limits and no inherited secrets."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from stepline.agents.sandbox import run_code
from stepline.testing import serve

from ..conftest import ProjectFactory


async def test_output_exit_code_stdin_and_files() -> None:
    result = await run_code(
        "import sys, json\n"
        "print(json.load(open('data.json'))['n'] * 2)\n"
        "print(sys.stdin.read().upper(), file=sys.stderr)\n"
        "sys.exit(3)",
        stdin="hello",
        files={"data.json": '{"n": 21}'},
    )
    assert result.stdout == "42\n" and result.stderr == "HELLO\n"
    assert result.exit_code == 3 and not result.ok and result.killed_by is None


async def test_a_runaway_loop_is_killed_at_the_timeout() -> None:
    result = await run_code("import time\nwhile True: time.sleep(0.01)", timeout=0.5)
    assert result.timed_out and result.killed_by == "timeout" and result.exit_code is None
    assert result.duration < 5


async def test_a_cpu_bound_loop_is_stopped_by_the_cpu_limit() -> None:
    result = await run_code("while True: pass", timeout=30, cpu=1)
    assert result.killed_by == "cpu" and result.exit_code is None
    assert result.duration < 10


async def test_a_memory_hog_gets_memory_error_not_the_machine() -> None:
    result = await run_code("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", memory=200 * 1024**2)
    assert result.killed_by == "memory" and "MemoryError" in result.stderr
    assert "allocated" not in result.stdout


async def test_the_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = await run_code("import os\nprint(sorted(os.environ))")
    assert "OPENAI_API_KEY" not in result.stdout and "sk-secret" not in result.stdout
    assert result.stdout.strip() == "['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE']"


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root or user namespaces")
async def test_no_network_by_default() -> None:
    code = "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', 6379))\nprint('connected')"
    assert "connected" not in (await run_code(code)).stdout
    assert (await run_code(code, network=True)).stdout == "connected\n"  # Redis runs on this machine


async def test_files_cannot_escape_the_folder() -> None:
    with pytest.raises(ValueError, match="outside the sandbox"):
        await run_code("", files={"../x.py": ""})


async def test_ctx_run_code_is_in_the_trace(make_project: ProjectFactory) -> None:
    project = {
        "steps/calc_step.py": """
            config = {"type": "api", "name": "Calc", "path": "/calc", "method": "POST"}
            async def handler(req, ctx):
                result = await ctx.run_code(req.body["code"], timeout=5)
                return {"out": result.stdout, "code": result.exit_code}
        """,
    }
    async with serve(make_project(project), store="memory://") as app:
        r = await app.client.post("/calc", json={"code": "print(sum(range(10)))"})
        assert r.json() == {"out": "45\n", "code": 0}
        (record,) = [x.data for x in await app.trace(r.headers["x-trace-id"]) if x.kind == "code"]
    assert record["code"] == "print(sum(range(10)))" and record["exit_code"] == 0 and record["stdout"] == "45\n"


async def test_run_code_starts_its_child_without_preexec_fn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits are set by the child itself: Python code between fork and exec in a process with
    threads (a preexec_fn) can deadlock, as the subprocess docs warn."""
    calls: list[dict[str, object]] = []
    real = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        calls.append(kwargs)
        return await real(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    limit = 200 * 1024 * 1024
    result = await run_code(
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0], resource.getrlimit(resource.RLIMIT_CPU)[0])",
        memory=limit,
        timeout=5,
    )
    assert calls and "preexec_fn" not in calls[0]
    assert result.ok, result.stderr
    assert result.stdout.split() == [str(limit), "6"]
