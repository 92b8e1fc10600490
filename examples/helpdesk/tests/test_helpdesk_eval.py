"""The eval and its gate: `stepline eval triage` run as CI runs it, a command whose exit status fails the
build, against a scripted model that triages well, then against one that misses what matters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepline.testing import ScriptedLLM

ROOT = Path(__file__).resolve().parent.parent

# How a good model triages each case of evals/triage.yaml, found by a phrase of the case's message.
GOOD = {
    "travel mug": {"category": "refund", "needs_refund": True, "order_id": "A-1001", "refund_reason": "damaged"},
    "kettle": {"category": "order_status", "needs_refund": False, "order_id": "B-2001"},
    "charged my card twice": {"category": "billing", "urgency": "high", "needs_refund": False, "order_id": "C-3001"},
    "grinder": {"category": "product_question", "urgency": "low", "needs_refund": False},
}
# A careless model: right about the kettle and the grinder, it misses the refund and the double charge's urgency.
CARELESS = GOOD | {
    "travel mug": {"category": "order_status", "needs_refund": False, "order_id": "A-1001"},
    "charged my card twice": {"category": "billing", "needs_refund": False, "order_id": "C-3001"},
}


def desk_model(triages: dict[str, dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """One scripted model for the three kinds of call an eval case makes: the triage, the agent, the judge."""

    def answer(request: dict[str, Any]) -> str:
        system, text = request["messages"][0]["content"], request["messages"][-1]["content"]
        if system.startswith("You grade"):  # the eval's `judge:` check
            return json.dumps({"pass": True, "reason": "polite, and to the point"})
        if "response_format" in request:  # ctx.llm.structured: the triage
            [fields] = [t for phrase, t in triages.items() if phrase in text]
            plain = {"urgency": "normal", "order_id": None, "refund_reason": None}
            return json.dumps(plain | fields)
        return "Thank you for writing: we are on it."  # the support agent

    return answer


def stepline_eval(tmp_path: Path, llm: ScriptedLLM) -> tuple[int, dict[str, Any], str]:
    """`stepline eval triage --json` on a copy of the project, pointed at the scripted model by the
    environment, as CI would point it at a real one: its exit status, its run, and what it printed."""
    # A copy: each run is kept in the project's .stepline/evals/, and the example's folder stays clean.
    project = tmp_path / "helpdesk"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".stepline", "__pycache__", "tests"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env |= {"STEPLINE_LLM_BASE_URL": llm.base_url, "STEPLINE_LLM_MODEL": llm.model}
    done = subprocess.run(
        [sys.executable, "-m", "stepline", "eval", "triage", "--dir", str(project), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.startswith("["), done.stderr  # the runs, as JSON, unless the eval could not run at all
    [run] = json.loads(done.stdout)
    return done.returncode, run, done.stderr


def test_the_gate_passes_when_the_model_triages_well(tmp_path: Path) -> None:
    with ScriptedLLM(*[desk_model(GOOD)] * 12) as llm:  # 4 cases: a triage, an answer and a judgement each
        code, run, printed = stepline_eval(tmp_path, llm)
    assert code == 0, printed
    assert run["summary"]["pass_rate"] == 1.0 and run["gate_failures"] == []
    assert [c["name"] for c in run["cases"]] == ["broken-mug", "late-kettle", "charged-twice", "grinder-question"]
    assert run["cases"][0]["output"]["triage"]["refund_reason"] == "damaged"
    # The judge read every reply, with its criterion.
    judged = [r for r in llm.requests if r["messages"][0]["content"].startswith("You grade")]
    assert len(judged) == 4
    assert "A short, polite reply that answers" in judged[0]["messages"][-1]["content"]
    assert llm.remaining == 0


def test_the_gate_fails_the_command_when_triage_gets_worse(tmp_path: Path) -> None:
    with ScriptedLLM(*[desk_model(CARELESS)] * 12) as llm:
        code, run, printed = stepline_eval(tmp_path, llm)
    assert code == 1, printed  # what fails the CI job
    assert run["gate_failures"] == ["pass rate 50% is below 75%"]
    failures = {c["name"]: c["failures"] for c in run["cases"] if not c["passed"]}
    assert sorted(failures) == ["broken-mug", "charged-twice"]
    assert failures["broken-mug"][0] == 'exact refund at triage.category (got "order_status")'
    assert failures["charged-twice"] == ['exact high at triage.urgency (got "normal")']
