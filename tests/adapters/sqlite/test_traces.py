"""The SQLite trace store's own promise, beside the shared ones: a large prune is cut into transactions
of `_PRUNE_ROWS`, so that it never holds the write lock for long while every other write waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stepline.adapters import sqlite as sqlite_adapter
from stepline.adapters.base import TraceRecord
from stepline.adapters.sqlite import SqliteTraceStore, open_sqlite


async def test_a_large_prune_goes_in_several_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_adapter, "_PRUNE_ROWS", 3)  # a few rows per transaction
    adapters = open_sqlite(tmp_path / "traces.db")
    t = adapters.traces
    assert isinstance(t, SqliteTraceStore)
    try:
        for n in range(20):  # interleaved: the kept trace has a part among the old ones and one after
            await t.append([TraceRecord(f"old{n}", "trigger", "A", 1.0 + n / 100, {"entry": "x"})])
            if n == 5:
                await t.append([TraceRecord("kept", "trigger", "A", 1.05, {"entry": "y"})])
        await t.append([TraceRecord("kept", "end", "A", 50.0, {"status": "ok"})])
        await t.append([TraceRecord("new", "trigger", "A", 60.0, {"entry": "z"})])
        writes = 0
        write = t._db.write

        async def counted(fn: Any) -> Any:
            nonlocal writes
            writes += 1
            return await write(fn)

        monkeypatch.setattr(t._db, "write", counted)
        assert await t.prune(older_than=10.0) == 20
        assert [s.trace_id for s in await t.recent()] == ["new", "kept"]
        assert writes >= 7  # 21 old rows, 3 a transaction
    finally:
        await adapters.close()
