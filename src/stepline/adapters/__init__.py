"""Stores, chosen by URL. The runtime depends only on the Protocols in `stepline.adapters.base`.

    open_store("memory://")                          # in this process only: tests, throwaway runs
    open_store("sqlite:///.stepline/stepline.db")    # a file, relative to the project root (the default)
    open_store("sqlite:////var/lib/app/app.db?sync=full")   # four slashes: an absolute path
    open_store("redis://127.0.0.1:6379/0")          # shared by every process on every host (docs/redis.md)

Each scheme names the module that implements it, imported only when a URL asks for it, so a store whose
driver is an optional extra costs nothing until it is used, and says what to install when it is missing.
A store module provides `open_url(url: StoreURL, options: StoreOptions) -> Adapters`.
"""

from __future__ import annotations

import importlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from stepline._errors import StoreURLError
from stepline.adapters.base import (
    Adapters,
    ClaimSpec,
    CronLock,
    DeadLetter,
    Delivery,
    Event,
    EventQueue,
    QueueStats,
    StateStore,
    StoreOptions,
    StoreURL,
    TraceRecord,
    TraceStore,
    TraceSummary,
)

STORE_ENV = "STEPLINE_STORE"
DEFAULT_STORE = "sqlite:///.stepline/stepline.db"


@dataclass(frozen=True)
class _Kind:
    module: str  # implements open_url
    extra: str | None  # the pip extra that brings its driver, if it needs one
    example: str


# One entry per store. A new store is a module with `open_url` and a line here.
STORES: dict[str, _Kind] = {
    "memory": _Kind("stepline.adapters.memory", None, "memory://"),
    "sqlite": _Kind("stepline.adapters.sqlite", None, DEFAULT_STORE),
    "redis": _Kind("stepline.adapters.redis", None, "redis://127.0.0.1:6379/0"),
    "rediss": _Kind("stepline.adapters.redis", None, "rediss://host:6380/0 (TLS)"),
}


def parse_store_url(text: str) -> StoreURL:
    text = text.strip()
    scheme, sep, _ = text.partition(":")
    if not sep or not scheme:
        raise StoreURLError(f"{text!r} is not a store URL", fix=_forms())
    parts = urllib.parse.urlsplit(text)
    query: dict[str, str] = {}
    url = StoreURL(text, parts.scheme.lower(), parts.netloc, urllib.parse.unquote(parts.path), query)
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name in query:
            raise url.refuse(f"sets {name} twice", "give each option once")  # (a password in it masked)
        query[name] = value
    return url


def open_store(url: str | None = None, options: StoreOptions | None = None) -> Adapters:
    """The store at `url`; without one, `$STEPLINE_STORE`, else SQLite in `.stepline/stepline.db`."""
    parsed = parse_store_url(url or store_url_from_env())
    kind = STORES.get(parsed.scheme)
    if kind is None:
        raise parsed.refuse(f"names an unknown store {parsed.scheme!r}", _forms())
    try:
        module = importlib.import_module(kind.module)
    except ModuleNotFoundError as exc:
        if kind.extra is None or exc.name == kind.module:
            raise
        raise StoreURLError(
            f"the {parsed.scheme} store needs {exc.name}, which is not installed",
            fix=f"pip install 'stepline[{kind.extra}]'",
        ) from None
    options = options or StoreOptions()
    adapters: Adapters = module.open_url(parsed, options)
    adapters.url = adapters.url or parsed.shown()
    adapters.clock = options.clock
    return adapters


def store_url_from_env() -> str:
    return os.environ.get(STORE_ENV, "").strip() or DEFAULT_STORE


def legacy_store_url(engine: str | None, database: str | Path | None, synchronous: str | None) -> str | None:
    """The URL that the deprecated `engine=`/`database=`/`synchronous=` (and `--engine/--db/--sync`) mean;
    None when none of them is given. The caller warns, in its own words."""
    if engine is None and database is None and synchronous is None:
        return None
    engine = (engine or "sqlite").lower()
    if engine == "memory":
        return "memory://"
    if engine != "sqlite":
        raise StoreURLError(f"{engine!r} is not a store", fix=_forms())
    # A database path used to be relative to the working directory; made absolute, it keeps that meaning.
    url = f"sqlite:///{urllib.parse.quote(str(Path(database).resolve()))}" if database is not None else DEFAULT_STORE
    if synchronous is not None and synchronous.upper() != "NORMAL":
        url += f"?sync={urllib.parse.quote(synchronous.lower())}"
    return url


def _forms() -> str:
    return "write one of " + ", ".join(kind.example for kind in STORES.values()) + " (docs/durability.md)"


__all__ = [
    "DEFAULT_STORE",
    "STORES",
    "STORE_ENV",
    "Adapters",
    "ClaimSpec",
    "CronLock",
    "DeadLetter",
    "Delivery",
    "Event",
    "EventQueue",
    "QueueStats",
    "StateStore",
    "StoreOptions",
    "StoreURL",
    "TraceRecord",
    "TraceStore",
    "TraceSummary",
    "legacy_store_url",
    "open_store",
    "parse_store_url",
]
