"""A store that fails for a while (a full disk, another process holding the write lock) stops nothing for
good: requests that cannot be stored get 503 with the reason, health says what is failing, every loop
resumes by itself once the cause clears, and nothing accepted is lost. Faults injected for real: a small
tmpfs filled to the last byte, and a second process holding SQLite's write lock."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepline.testing import RunningApp, serve

from ...conftest import ProjectFactory

ORDERS = {
    "steps/place_order_step.py": """
        config = {"type": "api", "name": "PlaceOrder", "path": "/orders/{n}", "method": "POST",
                  "emits": ["order.placed"]}

        async def handler(req, ctx):
            await ctx.emit("order.placed", {"n": int(req.path_params["n"]), "pad": "p" * 2000})
            return {"status": 202, "body": {"n": req.path_params["n"]}}
    """,
    "steps/ship_step.py": """
        import asyncio

        GATE = asyncio.Event()  # the test opens it; until then deliveries wait here, in flight
        GATE.set()

        config = {"type": "event", "name": "Ship", "subscribes": ["order.placed"]}

        async def handler(input, ctx):
            await GATE.wait()
            await ctx.state.increment("shipped", str(input["n"]))
    """,
}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs: a disk that can really be filled."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}): it needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left."""
    filler = disk / "filler"
    for chunk in (65536, 512):  # then the last bytes, smaller than a chunk
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
    return filler


async def health(app: RunningApp) -> tuple[int, dict[str, object]]:
    r = await app.client.get("/__stepline/health")
    return r.status_code, r.json()


async def wait_for(check: object, seconds: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


async def test_a_full_disk_answers_503_with_the_reason_and_recovers_by_itself(
    make_project: ProjectFactory, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stepline")
    async with serve(make_project(ORDERS), store=f"sqlite:///{small_disk}/stepline.db") as app:
        assert (await app.client.post("/orders/0")).status_code == 202
        await app.settle()
        filler = fill(small_disk)

        accepted, refused = [0], []
        # The WAL has room for a few writes even on a full disk; past it, every emit is refused.
        for n in range(1, 400):
            r = await app.client.post(f"/orders/{n}")
            assert r.status_code in (202, 503), r.text
            if r.status_code == 202:
                accepted.append(n)
            else:
                refused.append(r.json())
                if len(refused) >= 5:
                    break
        assert refused, "the disk never filled up"
        assert all("full" in body["reason"] and body["error"].startswith("Service Unavailable") for body in refused)

        async def failing() -> bool:
            status, body = await health(app)
            return status == 503 and any("full" in str(p["error"]) for p in body["problems"])  # type: ignore[union-attr]

        await wait_for(failing, 15, "health to say the disk is full")
        _, body = await health(app)
        assert all(p["fix"] for p in body["problems"])  # type: ignore[union-attr]

        filler.unlink()  # the cause clears: nothing is restarted by hand

        async def healthy() -> bool:
            return (await health(app))[0] == 200

        await wait_for(healthy, 20, "health to recover")
        assert (await app.client.post("/orders/999")).status_code == 202
        await app.settle(timeout=30)
        shipped = await app.stepline.engine.state.get_group("shipped")
        assert set(map(int, shipped)) == {*accepted, 999}  # every accepted order, once each
        assert set(shipped.values()) == {1}
        assert await app.stepline.dead_letters() == []
    failing_logs = [r for r in caplog.records if "is failing" in r.getMessage()]
    by_component = [r.getMessage().split(" is failing")[0] for r in failing_logs]
    assert failing_logs and len(by_component) <= 2 * len(set(by_component))  # once each, not once a retry
    assert any("recovered" in r.getMessage() for r in caplog.records)


HOLD_LOCK = """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held until told to let go
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
"""


def hold_lock(db: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_LOCK), str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("\n")
    holder.stdin.close()
    holder.wait(timeout=10)
    holder.stdout.close()


async def test_a_write_lock_held_by_another_process_answers_503_and_nothing_is_lost(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    root = make_project(ORDERS)
    db = tmp_path / "stepline.db"
    async with serve(root, store=f"sqlite:///{db}?busy_timeout=0.3") as app:
        gate = sys.modules["steps.ship_step"].GATE
        gate.clear()
        for n in range(10):  # in flight (leased, waiting at the gate) or queued when the lock is taken
            assert (await app.client.post(f"/orders/{n}")).status_code == 202
        await asyncio.sleep(0.3)

        holder = hold_lock(db)
        try:
            gate.set()  # handlers finish now, while their outcome cannot be written

            r = await app.client.post("/orders/100")
            assert r.status_code == 503, r.text
            assert "write lock" in r.json()["reason"]

            async def failing() -> bool:
                status, body = await health(app)
                return status == 503 and any("lock" in str(p["error"]) for p in body.get("problems", []))  # type: ignore[union-attr]

            await wait_for(failing, 10, "health to say another process holds the lock")
            assert (await app.client.get("/orders-nope")).status_code == 404  # the server answers meanwhile
        finally:
            let_go(holder)

        async def healthy() -> bool:
            return (await health(app))[0] == 200

        await wait_for(healthy, 15, "health to recover")
        await app.settle(timeout=30)
        shipped = await app.stepline.engine.state.get_group("shipped")
        assert shipped == {str(n): 1 for n in range(10)}  # each accepted order once: no run lost or repeated
        assert await app.stepline.dead_letters() == []
