"""Two hosts: the API process in a network namespace of its own, joined to the workers' by a veth pair,
both talking to a Redis across that interface. Made by the test (it needs root and iproute2)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest

from ..conftest import ProjectFactory, free_port
from ..durability.helpers import STEPLINE, kill_group, probe, start_server, wait_until
from .server import redis_server
from .test_scale_out import PROJECT, _check_order, _post_groups

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def second_host() -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to this one by a veth pair: (its name, this host's address, its address)."""
    tag = uuid.uuid4().hex[:6]
    ns, here, there = f"sl-{tag}", f"slh{tag}", f"sln{tag}"
    subnet = 16 + int(tag, 16) % 200  # 10.<subnet>.7.0/24, unlikely to meet another test's
    ours, theirs = f"10.{subnet}.7.1", f"10.{subnet}.7.2"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{ours}/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", ns, "addr", "add", f"{theirs}/24", "dev", there)
        _ip("-n", ns, "link", "set", there, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, ours, theirs
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _in_namespace(ns: str, root: Path, host: str, port: int, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, STEPLINE, "start", "--dir", str(root), "--host", host, "--port", str(port),
             "--role", "api", "--store", url, "--allowed-host", host],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


@pytest.mark.timeout(300)
async def test_an_api_host_and_a_worker_host_share_a_redis_across_a_network(
    make_project: ProjectFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chains, groups = 2000, 100
    root = make_project(PROJECT)
    with second_host() as (ns, ours, theirs):
        # Reachable from another host, so protected by a password (Redis refuses strangers otherwise).
        settings = ("--appendonly", "yes", "--appendfsync", "everysec", "--requirepass", "two-hosts")
        with redis_server(tmp_path / "redis", free_port(), *settings, bind=ours) as server:
            url = server.url(password="two-hosts")  # redis://:…@<this host's veth address>:port/0
            api_port, worker_port = free_port(), free_port()
            api = _in_namespace(ns, root, theirs, api_port, url, tmp_path / "api.log")
            worker = start_server(root, worker_port, tmp_path / "worker.log", "--workers", "2", "--role", "worker",
                                  store=url)  # fmt: skip
            with probe(url, root) as store:
                try:

                    def api_ready() -> bool:
                        answer = httpx.get(f"http://{theirs}:{api_port}/__stepline/health", timeout=2)
                        return answer.status_code == 200 and answer.json()["role"] == "api"

                    await asyncio.to_thread(wait_until, api_ready, 30, "the API host")
                    # The API host is another host: this one reaches it only across the veth pair.
                    peer = (
                        await asyncio.to_thread(
                            subprocess.run, ["ip", "netns", "exec", ns, "ip", "-brief", "addr"],
                            capture_output=True, text=True,
                        )
                    ).stdout  # fmt: skip
                    assert theirs in peer and ours not in peer
                    accepted, _ = await _post_to(theirs, api_port, chains, groups)
                    assert accepted == set(range(chains))
                    await asyncio.to_thread(wait_until, lambda: store.count("done") == chains, 120, "every chain")
                    _check_order(store, chains, groups)
                    assert store.stats().pending == 0
                finally:
                    kill_group(api, signal.SIGTERM)
                    kill_group(worker, signal.SIGTERM)
    with capsys.disabled():
        print(f"\n  two hosts: {chains} chains posted to an API host in another network namespace, run by workers")


async def _post_to(host: str, port: int, chains: int, groups: int) -> tuple[set[int], int]:
    return await _post_groups(port, chains, groups, host=host)
