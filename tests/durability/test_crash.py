"""kill -9 in the middle of 5,000 three-step chains on `stepline start --workers 2`: nothing accepted is lost.
On every store several processes can share (tests/stores.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2 as httpx
import pytest

from ..conftest import free_port
from .chain import write_chain_project
from .helpers import Probe, healthy, kill_group, probe, start_server, wait_until

CHAINS = 5000


async def _post_all(port: int, ids: list[int], stop_after: int | None) -> set[int]:
    """POST /chains/{id} for each id, 32 at a time; returns the ids answered 202 (accepted)."""
    accepted: set[int] = set()
    todo = list(ids)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

        async def worker() -> None:
            while todo:
                chain = todo.pop()
                if stop_after is not None and len(accepted) >= stop_after:
                    return
                try:
                    response = await client.post(f"/chains/{chain}")
                except httpx.TransportError:
                    continue  # the server died under us: not accepted, sent again after the restart
                if response.status_code == 202:
                    accepted.add(chain)

        await asyncio.gather(*(worker() for _ in range(32)))
    return accepted


@pytest.mark.timeout(600)
async def test_sigkill_mid_run_loses_no_accepted_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_store: str
) -> None:
    root = write_chain_project(tmp_path / "chain")
    with probe(shared_store, root) as store:
        await _crash_and_recover(root, shared_store, store, tmp_path / "server.log", capsys)


async def _crash_and_recover(root: Path, url: str, store: Probe, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()

    server = start_server(root, port, log, "--workers", "2", store=url)
    try:
        await asyncio.to_thread(wait_until, lambda: healthy(port), 30, "the server")
        posting = asyncio.create_task(_post_all(port, list(range(CHAINS)), stop_after=None))
        # pull the plug on every process at once while requests arrive and chains are half-way
        await asyncio.to_thread(
            wait_until,
            lambda: store.count("done") >= CHAINS // 4,
            60,
            "a quarter of the chains to finish",
        )
    finally:
        kill_group(server)
    first = await posting
    done_at_kill = await asyncio.to_thread(store.count, "done")
    pending_at_kill = await asyncio.to_thread(store.queued)
    assert done_at_kill < CHAINS and pending_at_kill > 0, "the kill came too late to test anything"

    server = start_server(root, port, log, "--workers", "2", store=url)
    try:
        await asyncio.to_thread(wait_until, lambda: healthy(port), 30, "the restarted server")
        rest = await _post_all(port, sorted(set(range(CHAINS)) - first), stop_after=None)
        assert first | rest == set(range(CHAINS))
        await asyncio.to_thread(
            wait_until,
            lambda: store.count("done") == CHAINS,
            300,
            "every chain to complete",
        )
    finally:
        kill_group(server, sig=15)

    done = {int(k) for k in await asyncio.to_thread(store.group, "done")}
    assert done == set(range(CHAINS)), f"missing chains: {sorted(set(range(CHAINS)) - done)[:20]}"
    stats = await asyncio.to_thread(store.stats)
    assert stats.pending + stats.later == 0 and stats.dead == 0
    runs = {k: int(v) for k, v in (await asyncio.to_thread(store.group, "runs")).items()}
    repeated = sum(runs.values()) - 3 * CHAINS
    assert repeated >= 0
    with capsys.disabled():
        print(
            f"\n  crash test: {CHAINS} chains, killed with {done_at_kill} done and {pending_at_kill} deliveries "
            f"queued; all completed after restart; handler runs repeated: {repeated} "
            f"(A {runs['A'] - CHAINS}, B {runs['B'] - CHAINS}, C {runs['C'] - CHAINS})"
        )
