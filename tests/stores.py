"""The stores every shared suite runs on. A new store joins them all by adding one entry to STORES.

Each entry gives the URL of a fresh, empty store for one test (under the test's own tmp_path, or a
namespace of its own on a server), and what removes it after the test when tmp_path's removal does not."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

# The machine's own Redis (CI starts it if it is down). It keeps no AOF, so the tests accept a volatile
# store; each test has a key prefix of its own, deleted after it.
REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class StoreKind:
    name: str
    url: Callable[[Path], str]  # a fresh store's URL, given the test's tmp_path
    shared: bool  # several processes can share it (and it outlives them)
    cleanup: Callable[[str], None] = lambda url: None  # given the URL, after the test

    def __str__(self) -> str:
        return self.name


def redis_url(tmp: Path) -> str:
    return f"{REDIS}?prefix=test-{uuid.uuid4().hex[:12]}&volatile=true"


def drop_redis_prefix(url: str) -> None:
    """Delete every key of the store at `url` (its prefix's)."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    client = redis.Redis.from_url(url.split("?")[0])
    try:
        keys = list(client.scan_iter(match=f"{{{query['prefix']}}}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


STORES = [
    StoreKind("memory", lambda tmp: "memory://", shared=False),
    StoreKind("sqlite", lambda tmp: f"sqlite:///{tmp}/stores/stepline.db", shared=True),
    StoreKind("redis", redis_url, shared=True, cleanup=drop_redis_prefix),
]
SHARED_STORES = [kind for kind in STORES if kind.shared]
