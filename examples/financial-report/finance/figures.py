"""The numbers of a monthly report, computed from the CRM and accounting data."""

from __future__ import annotations

from typing import Any


def figures(crm: dict[str, Any], accounting: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    revenue = float(accounting["revenue"])
    costs = {name: float(value) for name, value in accounting["costs"].items()}
    total_costs = sum(costs.values())
    net = revenue - total_costs
    deals = sorted(crm["dealsWon"], key=lambda d: d["amount"], reverse=True)
    out: dict[str, Any] = {
        "revenue": round(revenue, 2),
        "costs": {name: round(value, 2) for name, value in costs.items()},
        "totalCosts": round(total_costs, 2),
        "netIncome": round(net, 2),
        "margin": round(net / revenue, 4) if revenue else 0.0,
        "dealsWon": len(deals),
        "dealsValue": round(sum(d["amount"] for d in deals), 2),
        "topDeals": deals[:3],
        "pipeline": crm["pipeline"],
        "newCustomers": crm["newCustomers"],
        "churnedCustomers": crm["churnedCustomers"],
        "cash": accounting["cash"],
        "revenueGrowth": None,
        "previousMonth": None,
    }
    if previous is not None:
        before = {name: float(value) for name, value in previous["costs"].items()}
        out["previousMonth"] = {
            "revenue": round(float(previous["revenue"]), 2),
            "costs": {name: round(value, 2) for name, value in before.items()},
            "totalCosts": round(sum(before.values()), 2),
            "netIncome": round(float(previous["revenue"]) - sum(before.values()), 2),
            "cash": previous["cash"],
        }
        if previous["revenue"]:
            out["revenueGrowth"] = round(revenue / float(previous["revenue"]) - 1, 4)
    return out


def draft(month: str, numbers: dict[str, Any]) -> dict[str, Any]:
    """Title, summary and highlights from a template: the draft when no model is configured."""
    growth = numbers["revenueGrowth"]
    trend = "no earlier month to compare" if growth is None else f"{growth:+.1%} on the month before"
    biggest_cost = max(numbers["costs"], key=numbers["costs"].get)
    top = numbers["topDeals"][0] if numbers["topDeals"] else None
    highlights = [
        f"Revenue {numbers['revenue']:,.0f} ({trend}).",
        f"Net income {numbers['netIncome']:,.0f}, a margin of {numbers['margin']:.1%}.",
        f"{numbers['dealsWon']} deals won worth {numbers['dealsValue']:,.0f}; pipeline {numbers['pipeline']:,.0f}.",
        f"Largest cost: {biggest_cost} ({numbers['costs'][biggest_cost]:,.0f}).",
    ]
    if top:
        highlights.append(f"Top deal: {top['customer']} ({top['amount']:,.0f}).")
    summary = (
        f"In {month} the company earned {numbers['revenue']:,.0f} in revenue against "
        f"{numbers['totalCosts']:,.0f} in costs, leaving {numbers['netIncome']:,.0f}. "
        f"It won {numbers['dealsWon']} deals and gained {numbers['newCustomers']} customers "
        f"while losing {numbers['churnedCustomers']}."
    )
    return {"title": f"Financial report, {month}", "summary": summary, "highlights": highlights}
