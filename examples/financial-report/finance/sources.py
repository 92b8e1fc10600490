"""The example's stand-ins for a CRM and an accounting system: JSON fixtures, one entry per month."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class MonthNotFound(LookupError):
    pass


def _load(source: str, month: str) -> dict[str, Any]:
    data: dict[str, dict[str, Any]] = json.loads((FIXTURES / f"{source}.json").read_text())
    if month not in data:
        raise MonthNotFound(f"{source} has no data for {month} (it has {', '.join(sorted(data))})")
    return data[month]


def crm(month: str) -> dict[str, Any]:
    return _load("crm", month)


def accounting(month: str) -> dict[str, Any]:
    return _load("accounting", month)


def previous_month(month: str) -> str:
    year, number = (int(part) for part in month.split("-"))
    return f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"


def accounting_or_none(month: str) -> dict[str, Any] | None:
    try:
        return accounting(month)
    except MonthNotFound:
        return None
