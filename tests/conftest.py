from __future__ import annotations

import shutil
import socket
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.stores import SHARED_STORES, STORES, StoreKind

if TYPE_CHECKING:
    from playwright.async_api import Browser

ProjectFactory = Callable[[dict[str, str]], Path]


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """Write a project from {relative path: source} (dedented) and return its root."""

    def make(files: dict[str, str]) -> Path:
        root = tmp_path / "project"
        (root / "steps").mkdir(parents=True, exist_ok=True)
        for rel, source in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).lstrip())
        return root

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fresh(kind: StoreKind, tmp_path: Path) -> Iterator[str]:
    url = kind.url(tmp_path)
    try:
        yield url
    finally:
        kind.cleanup(url)


@pytest.fixture(params=STORES, ids=str)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh store, once for each kind in tests/stores.py."""
    yield from _fresh(request.param, tmp_path)


@pytest.fixture(params=SHARED_STORES, ids=str)
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh store that several processes can share, once for each such kind."""
    yield from _fresh(request.param, tmp_path)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (which cannot download browsers here)."""
    from playwright.async_api import async_playwright  # only for the tests that ask for a browser

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make browser` installs Debian's chromium")
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield launched
        await launched.close()
