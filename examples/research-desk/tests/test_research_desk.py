"""The desk end to end against a scripted model: a planner hands work to two specialists by events, an
editor joins their findings. The specialists run at the same time, so answers depend on who asks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepline import load_project
from stepline.testing import ScriptedLLM, serve

ROOT = Path(__file__).resolve().parent.parent


def desk_model(request: dict[str, Any]) -> str:
    """Answers as each agent would, told apart by its system prompt."""
    system = request["messages"][0]["content"]
    if system.startswith("You plan"):
        return json.dumps({"market": "Size the EU heat-pump market.", "risk": "Risks of EU heat pumps?"})
    if system.startswith("You are a market analyst"):
        return "The market grows 12% a year."
    if system.startswith("You are a risk analyst"):
        return "Subsidies may end."
    assert system.startswith("You are the editor"), system
    return "Growing 12% a year; the risk is subsidies ending."


async def test_a_planner_two_specialists_and_an_editor_answer_together(tmp_path: Path) -> None:
    with ScriptedLLM(*[desk_model] * 4) as llm:
        async with serve(ROOT, store=f"sqlite:///{tmp_path}/desk.db", llm=llm.settings()) as app:
            r = await app.client.post("/questions", json={"question": "Should we invest in EU heat pumps?"})
            assert r.status_code == 202, r.text
            question_id = r.json()["questionId"]
            await app.settle()
            answer = (await app.client.get(f"/questions/{question_id}")).json()
            trace = await app.trace(question_id)
    assert answer["status"] == "answered"
    assert answer["answer"] == "Growing 12% a year; the risk is subsidies ending."
    assert answer["finding.market"] == "The market grows 12% a year."
    assert answer["plan"] == {"market": "Size the EU heat-pump market.", "risk": "Risks of EU heat pumps?"}
    # the editor read both findings
    editor = next(r for r in llm.requests if r["messages"][0]["content"].startswith("You are the editor"))
    assert "The market grows" in editor["messages"][1]["content"] and "Subsidies" in editor["messages"][1]["content"]
    # one trace shows every agent's model call
    steps = [r.step for r in trace if r.kind == "llm"]
    assert sorted(steps) == ["Editor", "MarketAnalyst", "Planner", "RiskAnalyst"]
    assert len(llm.requests) == 4  # the editor wrote once, though woken twice


async def test_an_unknown_question_is_a_404(tmp_path: Path) -> None:
    async with serve(ROOT, store="memory://") as app:
        assert (await app.client.get("/questions/nope")).status_code == 404


def test_the_project_loads_without_warnings() -> None:
    assert load_project(ROOT).warnings == []
