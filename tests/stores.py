"""The stores every shared suite runs on. A new store joins them all by adding one entry to STORES.

Each entry gives the URL of a fresh, empty store for one test (under the test's own tmp_path, or a
namespace of its own on a server), and what removes it after the test when tmp_path's removal does not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoreKind:
    name: str
    url: Callable[[Path], str]  # a fresh store's URL, given the test's tmp_path
    shared: bool  # several processes can share it (and it outlives them)
    cleanup: Callable[[str], None] = lambda url: None  # given the URL, after the test

    def __str__(self) -> str:
        return self.name


STORES = [
    StoreKind("memory", lambda tmp: "memory://", shared=False),
    StoreKind("sqlite", lambda tmp: f"sqlite:///{tmp}/stores/stepline.db", shared=True),
]
SHARED_STORES = [kind for kind in STORES if kind.shared]
