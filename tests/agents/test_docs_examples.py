"""The agent examples of README.md, docs/agents.md and docs/testing.md, run as written.

Each fenced block whose first line names a file (`# steps/agent_step.py`, `# evals/answers.yaml: ...`)
is written to that path of a fresh project; the tests then drive the project as a reader would."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stepline.cli import app as cli
from stepline.testing import Answer, ScriptedLLM, serve

REPO = Path(__file__).parent.parent.parent
_BLOCK = re.compile(r"^```(?:python|yaml|toml)\n# ([\w./-]+\.(?:py|yaml|toml))\b[^\n]*\n(.*?)^```", re.M | re.S)


def blocks(doc: str) -> dict[str, str]:
    """{path: source} of the doc's blocks that name their file."""
    found: dict[str, str] = {}
    for path, body in _BLOCK.findall((REPO / doc).read_text()):
        found.setdefault(path, textwrap.dedent(body))
    return found


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, source in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(source)
    (root / "steps").mkdir(exist_ok=True)
    return root


async def run_test_block(root: Path, rel: str, name: str) -> None:
    """Run a test function of a doc as pytest would run it from the project's tests/ folder."""
    namespace: dict[str, Any] = {"__file__": str(root / rel), "__name__": "doc_test"}
    exec(compile((root / rel).read_text(), str(root / rel), "exec"), namespace)
    await namespace[name]()


@pytest.mark.parametrize(
    ("doc", "test"), [("docs/agents.md", "test_the_agent_adds"), ("docs/testing.md", "test_the_agent_uses_its_tool")]
)
async def test_the_fake_model_test_snippet_and_its_agent_step_run_as_written(
    tmp_path: Path, doc: str, test: str
) -> None:
    files = blocks(doc)
    assert {"steps/agent_step.py", "tests/test_agent.py"} <= set(files)
    root = write(tmp_path / "project", {k: files[k] for k in ("steps/agent_step.py", "tests/test_agent.py")})
    await run_test_block(root, "tests/test_agent.py", test)


async def test_the_fake_clock_example_of_testing_md_runs_as_written(tmp_path: Path) -> None:
    files = blocks("docs/testing.md")
    root = write(tmp_path / "project", {k: files[k] for k in ("steps/remind_step.py", "tests/test_reminder.py")})
    await run_test_block(root, "tests/test_reminder.py", "test_the_reminder_goes_out_a_day_later")


async def test_the_readme_agent_step_runs_with_its_tools(tmp_path: Path) -> None:
    files = blocks("README.md")
    wanted = [
        "steps/reports/request_report_step.py",
        "steps/reports/fetch_crm_step.py",
        "steps/reports/get_figures_step.py",
        "steps/reports/analyze_step.py",
    ]
    root = write(tmp_path / "project", {k: files[k] for k in wanted})
    with ScriptedLLM(
        Answer.tool_call("GetFigures", {"month": "2026-10"}),
        Answer.tool_call("growth", {"now": 120_000, "before": 100_000}),
        "Revenue grew 20% on September.",
    ) as llm:
        async with serve(root, llm=llm.settings(), store="memory://") as app:
            r = await app.client.post("/reports", json={"month": "2026-10"})
            assert r.status_code == 202, r.text
            await app.settle()
            (approval,) = (await app.stepline.engine.control.get_group("approvals")).values()
            (waiting,) = (await app.stepline.engine.control.get_group("runs")).values()
    assert approval["status"] == "pending" and approval["data"] == "Revenue grew 20% on September."
    assert waiting["step"] == "Analyze" and waiting["status"] == "suspended"  # it waits for the decision
    tool_results = [m["content"] for m in llm.requests[2]["messages"] if m["role"] == "tool"]
    assert json.loads(tool_results[0]) == {
        "status": 200,
        "body": {"month": "2026-10", "revenue": 120000, "previous": 100000},
    }
    assert float(tool_results[1]) == pytest.approx(0.2)


def _model(body: dict[str, Any]) -> str:
    if body["messages"][0]["content"].startswith("You grade"):  # the eval's judge
        return '{"pass": true, "reason": "correct and polite"}'
    question = body["messages"][-1]["content"]
    return {"Capital of France?": "Paris is the capital of France.", "Capital of Japan?": "Tokyo."}[question]


def test_the_eval_example_of_agents_md_loads_and_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = blocks("docs/agents.md")
    wanted = ["steps/answer_step.py", "evals/answers.yaml", "evals/more_answers.yaml", "checks.py"]
    root = write(tmp_path / "project", {k: files[k] for k in wanted})
    with ScriptedLLM(*[_model] * 4) as llm:
        monkeypatch.setenv("STEPLINE_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("STEPLINE_LLM_MODEL", "scripted")
        result = CliRunner().invoke(cli, ["eval", "--dir", str(root), "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.output)  # answers only: more_answers.yaml is its dataset
    assert [(c["name"], c["passed"], c["failures"]) for c in run["cases"]] == [
        ("france", True, []),
        ("japan", True, []),
    ]
