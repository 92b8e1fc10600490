from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stores import drop_redis_prefix, redis_url


@pytest.fixture
def redis_store(tmp_path: Path) -> Iterator[str]:
    """A fresh store on the machine's Redis: a key prefix of this test's own, deleted after it."""
    url = redis_url(tmp_path)
    try:
        yield url
    finally:
        drop_redis_prefix(url)
