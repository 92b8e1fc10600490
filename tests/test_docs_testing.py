"""docs/testing.md's first example, and what it promises of settle(), run as written."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from stepline import Stepline

from .conftest import ProjectFactory

REPO = Path(__file__).parent.parent
EXAMPLE = REPO / "examples" / "financial-report"


def test_the_first_example_of_testing_md_passes_on_the_example_project(tmp_path: Path) -> None:
    page = (REPO / "docs" / "testing.md").read_text()
    block = re.search(r"```python\n(from pathlib import Path\n.*?)```", page, re.S)
    assert block is not None, "docs/testing.md lost its first example"
    # As a reader places it: a test file in the example project's tests/ folder.
    source = block.group(1).replace("Path(__file__).parent.parent", f"Path({str(EXAMPLE)!r})")
    (tmp_path / "test_from_the_docs.py").write_text(source)
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "test_from_the_docs.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


async def test_settle_does_not_wait_for_a_delivery_delayed_past_its_timeout(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """An approval's 24-hour timeout is a delayed event: settle() returns instead of timing out, and still
    waits for what is due within its timeout (a retry's backoff)."""
    root = make_project(
        {
            "steps/later_step.py": """
                config = {"type": "event", "name": "Later", "subscribes": ["later", "soon"]}
                async def handler(input, ctx):
                    await ctx.state.set("ran", input["name"], True)
            """
        }
    )
    app = Stepline(root, store=f"sqlite:///{tmp_path}/db.sqlite")
    async with app.lifespan():
        await app.emit("later", {"name": "tomorrow"}, delay=86400)
        await app.emit("soon", {"name": "soon"}, delay=0.5)
        started = time.monotonic()
        await app.settle(timeout=5)
        assert time.monotonic() - started < 4
        assert await app.engine.state.get("ran", "soon") is True  # due within the timeout: waited for
        assert await app.engine.state.get("ran", "tomorrow") is None
        assert (await app.adapters.queue.stats()).delayed == 1
