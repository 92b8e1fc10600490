"""The shop's orders. A small JSON file stands in for the order database here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ORDERS = Path(__file__).resolve().parent.parent / "fixtures" / "orders.json"


def find_order(order_id: str) -> dict[str, Any] | None:
    """The order with this id, or None. Read on every call: the file is small, and an edit shows at once."""
    orders: dict[str, dict[str, Any]] = json.loads(ORDERS.read_text())
    return orders.get(order_id)
