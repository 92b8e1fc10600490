"""Start-up reads the server's persistence and eviction settings and refuses one that can lose accepted
events, saying which setting to change; `?volatile=true` accepts it. On servers of the tests' own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest

from stepline._errors import StoreError, StoreURLError
from stepline.adapters import open_store

from ..conftest import free_port
from ..durability.chain import write_chain_project
from ..durability.helpers import STEPLINE, healthy, kill_group, start_server, wait_until
from .server import redis_server


def _start(root: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STEPLINE, "start", "--dir", str(root), "--port", str(free_port()), "--store", url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_refuses_a_redis_without_an_append_only_file(tmp_path: Path) -> None:
    root = write_chain_project(tmp_path / "app")
    with redis_server(tmp_path / "redis", free_port(), "--appendonly", "no") as server:
        done = _start(root, server.url())
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "Cannot use the store" in out
    assert "keeps no append-only file (appendonly no)" in out
    assert "appendonly yes" in out and "volatile=true" in out


def test_start_refuses_a_redis_that_evicts_keys(tmp_path: Path) -> None:
    root = write_chain_project(tmp_path / "app")
    settings = ("--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    with redis_server(tmp_path / "redis", free_port(), *settings) as server:
        done = _start(root, server.url())
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "may evict keys when memory runs short (maxmemory-policy allkeys-lru)" in out
    assert "maxmemory-policy noeviction" in out
    assert "append-only" not in out  # only what is wrong is named


def test_start_refuses_with_several_workers_too_before_starting_any(tmp_path: Path) -> None:
    root = write_chain_project(tmp_path / "app")
    with redis_server(tmp_path / "redis", free_port(), "--appendonly", "no") as server:
        done = subprocess.run(
            [STEPLINE, "start", "--dir", str(root), "--port", str(free_port()), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "STEPLINE_STORE": server.url()},
        )
    assert done.returncode == 1
    assert "appendonly no" in " ".join((done.stdout + done.stderr).split())


def test_a_volatile_store_is_accepted_when_asked_for_and_a_durable_one_always(tmp_path: Path) -> None:
    root = write_chain_project(tmp_path / "app")
    with redis_server(tmp_path / "redis", free_port(), "--appendonly", "no") as server:
        port = free_port()
        proc = start_server(root, port, tmp_path / "volatile.log", store=server.url("volatile=true"))
        try:
            wait_until(lambda: healthy(port), 30, "the server on a volatile store")
            assert httpx.post(f"http://127.0.0.1:{port}/chains/1", timeout=10).status_code == 202
        finally:
            kill_group(proc, 15)
    assert "can lose accepted events (volatile=true accepts it)" in (tmp_path / "volatile.log").read_text()
    durable = ("--appendonly", "yes", "--appendfsync", "everysec")
    with redis_server(tmp_path / "redis2", free_port(), *durable) as server:
        port = free_port()
        proc = start_server(root, port, tmp_path / "durable.log", store=server.url())
        try:
            wait_until(lambda: healthy(port), 30, "the server on a durable store")
        finally:
            kill_group(proc, 15)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:6379/0?prefix=a{b}", "prefix="),
        ("redis://127.0.0.1:6379/zero", "a Redis database is a number"),
        ("redis://127.0.0.1:6379/0?volatile=maybe", "volatile=true or volatile=false"),
        ("redis://127.0.0.1:6379/0?timeout=-1", "in seconds"),
        ("redis://127.0.0.1:6379/0?pool=3", "does not take (pool)"),
        ("redis:///0", "names no host"),
    ],
)
def test_a_bad_redis_url_is_refused_with_the_fix(url: str, says: str) -> None:
    with pytest.raises(StoreURLError) as caught:
        open_store(url)
    assert says in str(caught.value)


async def test_an_unreachable_redis_is_unavailable_not_broken(tmp_path: Path) -> None:
    adapters = open_store(f"redis://127.0.0.1:{free_port()}/0?volatile=true&timeout=1")
    try:
        with pytest.raises(StoreError) as caught:
            await adapters.state.get("g", "k")
        assert type(caught.value).__name__ == "StoreUnavailableError"
        assert "cannot be reached" in str(caught.value)
    finally:
        await adapters.close()


def test_a_password_in_the_url_is_never_shown(tmp_path: Path) -> None:
    root = write_chain_project(tmp_path / "app")
    with redis_server(tmp_path / "redis", free_port(), "--appendonly", "no", "--requirepass", "s3cret") as server:
        done = _start(root, f"redis://:s3cret@127.0.0.1:{server.port}/0")
    assert done.returncode == 1
    assert "s3cret" not in done.stdout + done.stderr
    assert "appendonly no" in " ".join((done.stdout + done.stderr).split())
