"""Reading a SQLite store's file directly: for the tests of the SQLite adapter itself, never shared ones."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
