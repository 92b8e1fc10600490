"""`stepline eval`: datasets through the real flow, every kind of check, gates that fail CI, runs compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stepline.cli import app as cli
from stepline.testing import ScriptedLLM

from ..conftest import ProjectFactory

PROJECT = {
    "stepline.toml": """
        [llm.prices.scripted]
        input = 1000.0
        output = 1000.0
    """,
    "steps/ask_step.py": """
        config = {"type": "api", "name": "Ask", "path": "/ask", "method": "POST", "emits": ["asked"]}
        async def handler(req, ctx):
            reply = await ctx.llm.chat(req.body["q"])
            await ctx.emit("asked", {"answer": reply.text})
            return {"answer": reply.text}
    """,
    "steps/file_step.py": """
        config = {"type": "event", "name": "File", "subscribes": ["asked"]}
        async def handler(input, ctx):
            await ctx.state.set("filed", ctx.trace_id, {"text": input["answer"], "words": len(input["answer"].split())})
    """,
    "checks.py": """
        def short(output, given):
            return len(output) < 20
    """,
    "evals/answers.yaml": """
        target: POST /ask
        output: answer
        cases:
          - name: france
            input: {q: "Capital of France?"}
            expect: Paris
          - name: japan
            input: {q: "Capital of Japan?"}
            expect: Tokyo
          - name: greeting
            input: {q: "Say hi"}
            expect: [{judge: "A friendly greeting."}, {python: "checks:short"}]
        checks:
          - regex: "^[A-Z]"
          - latency_ms: 60000
        gates: {pass_rate: 1.0, p95_ms: 60000}
    """,
    "evals/filed.yaml": """
        target: POST /ask
        output: {state: {group: filed, key: "{trace_id}"}}
        dataset: filed.jsonl
        checks:
          - json_schema: {type: object, required: [text, words]}
          - exact: 2
            path: words
          - cost_usd: 0.01
        gates: {pass_rate: 0.5}
    """,
    "evals/filed.jsonl": '{"input": {"q": "two words"}}\n{"input": {"q": "costly"}, "name": "costly"}\n',
}


def stepline(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture
def project(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, ScriptedLLM]:
    llm = ScriptedLLM().start()
    monkeypatch.setenv("STEPLINE_LLM_BASE_URL", llm.base_url)
    monkeypatch.setenv("STEPLINE_LLM_MODEL", "scripted")
    return make_project(PROJECT), llm


def test_a_failing_case_fails_the_gate_and_the_next_run_is_compared(project: tuple[Path, ScriptedLLM]) -> None:
    root, llm = project
    llm.add("Paris.", "Osaka.", "Hello there!", '{"pass": true, "reason": "warm"}')
    code, output = stepline("eval", "answers", "--dir", str(root))
    assert code == 1, output
    assert "france" in output and "japan" in output and "greeting" in output
    assert "FAIL" in output and "contains Tokyo" in output
    assert "pass rate 67% (2/3)" in output and "gate failed: pass rate 67% is below 100%" in output
    judge = llm.requests[3]
    assert (
        "A friendly greeting." in judge["messages"][-1]["content"]
        and "Hello there!" in judge["messages"][-1]["content"]
    )

    llm.add("Paris.", "Tokyo.", "Hi!", '{"pass": false, "reason": "too curt"}')
    code, output = stepline("eval", "answers", "--dir", str(root))
    assert code == 1
    assert "judge: too curt" in output
    assert "changed result: japan, greeting" in output and "+0 points" in output
    kept = sorted((root / ".stepline" / "evals" / "answers").glob("*.json"))
    assert len(kept) == 2 and json.loads(kept[-1].read_text())["summary"]["cases"] == 3
    llm.stop()


def test_state_outputs_datasets_schema_path_and_cost_checks(project: tuple[Path, ScriptedLLM]) -> None:
    root, llm = project
    llm.add("Two words", "this answer is expensive because it uses many many words")  # 11 tokens: $0.011
    code, output = stepline("eval", "filed", "--dir", str(root), "--json")
    llm.stop()
    assert code == 0, output  # one of two passes: the gate asks for 50%
    (run,) = json.loads(output)
    first, costly = run["cases"]
    assert first["passed"] and first["output"] == {"text": "Two words", "words": 2}
    assert first["cost_usd"] > 0 and first["tokens"] > 0
    assert not costly["passed"]
    assert any(f.startswith("exact 2") for f in costly["failures"])
    assert any(f.startswith("cost_usd") for f in costly["failures"])


def test_bad_eval_files_are_listed_with_file_field_and_fix(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "evals/bad.yaml": "target: ask\ncases: []\nchecks: [{smells: ok}]\n",
            "evals/empty.yaml": "target: POST /ask\n",
        }
    )
    code, output = stepline("eval", "--dir", str(root))
    assert code == 1
    assert "evals/bad.yaml" in output and '"METHOD /path"' in output and "a check is one of" in output
    assert "evals/empty.yaml" in output and "no cases" in output


DATASET_BESIDE = {
    "steps/echo_step.py": """
        config = {"type": "api", "name": "Echo", "path": "/echo", "method": "POST"}
        async def handler(req, ctx):
            return {"said": req.body["say"]}
    """,
    "evals/echo.yaml": """
        target: POST /echo
        output: said
        dataset: echo_cases.yaml
    """,
    "evals/echo_cases.yaml": """
        - {name: hello, input: {say: hello}, expect: hello}
        - {name: bye, input: {say: bye}, expect: {exact: bye}}
    """,
    "evals/spare_cases.yml": """
        - {input: {say: kept for later}}
    """,
}


def test_a_yaml_dataset_beside_an_eval_is_its_dataset_not_an_eval(make_project: ProjectFactory) -> None:
    root = make_project(DATASET_BESIDE)
    code, output = stepline("eval", "--dir", str(root), "--json")
    assert code == 0, output
    (run,) = json.loads(output)  # echo only: neither list of cases is taken for an eval
    assert run["name"] == "echo" and [c["name"] for c in run["cases"]] == ["hello", "bye"]
    assert all(c["passed"] for c in run["cases"])

    code, output = stepline("eval", "echo_cases", "--dir", str(root))
    assert code == 1
    assert "evals/echo_cases.yaml" in output and "is a dataset" in output and "stepline eval echo" in output


def test_a_dataset_that_is_not_a_list_of_cases_says_so(make_project: ProjectFactory) -> None:
    root = make_project({**DATASET_BESIDE, "evals/echo_cases.yaml": "hello: {say: hello}\n"})
    code, output = stepline("eval", "--dir", str(root))
    assert code == 1
    assert "evals/echo.yaml" in output and "echo_cases.yaml must be a list of cases" in output


UNSETTLED = {
    "steps/start_step.py": """
        config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["work"]}
        async def handler(req, ctx):
            await ctx.emit("work", {"seconds": req.body["seconds"]})
            return {"started": True}
    """,
    "steps/work_step.py": """
        import asyncio
        config = {"type": "event", "name": "Work", "subscribes": ["work"]}
        async def handler(input, ctx):
            await asyncio.sleep(input["seconds"])
    """,
    "evals/slow.yaml": """
        target: POST /start
        settle_timeout: 2
        cases:
          - {name: stuck, input: {seconds: 3}}
          - {name: quick, input: {seconds: 0}}
    """,
}


def test_a_case_whose_flow_does_not_settle_fails_with_why_and_the_next_case_runs(
    make_project: ProjectFactory,
) -> None:
    root = make_project(UNSETTLED)
    code, output = stepline("eval", "slow", "--dir", str(root), "--json")
    assert code == 1, output  # a failed case, not a crash: the gate (pass rate 100%) fails
    (run,) = json.loads(output)
    stuck, quick = run["cases"]
    assert not stuck["passed"]
    assert stuck["failures"] == [
        "the flow did not settle within 2 s: 1 delivery queued or running; raise settle_timeout in the eval "
        "if it needs longer"
    ]
    assert quick["passed"], quick["failures"]
    assert run["gate_failures"] == ["pass rate 50% is below 100%"]


CHECKED = {
    "steps/answer_step.py": """
        config = {"type": "api", "name": "Answer", "path": "/answer", "method": "POST"}
        async def handler(req, ctx):
            return {"answer": req.body["answer"], "words": len(req.body["answer"].split())}
    """,
    "evals/shown.yaml": """
        target: POST /answer
        cases:
          - name: wrong
            input: {answer: "Osaka is big."}
            expect: [{contains: Tokyo, path: answer}, {exact: 2, path: words}, {regex: "^T", path: answer}]
          - name: long
            input: {answer: "LONG"}
            expect: [{json_schema: {type: object, required: [sources]}}, {exact: "short", path: answer}]
    """,
}


def test_a_failed_check_names_the_check_and_shows_the_actual_value_clipped(make_project: ProjectFactory) -> None:
    long_answer = "word " * 100
    root = make_project(CHECKED)
    (root / "evals/shown.yaml").write_text(
        (root / "evals/shown.yaml").read_text().replace('"LONG"', f'"{long_answer}"')
    )
    code, output = stepline("eval", "--dir", str(root), "--json")
    assert code == 1
    (run,) = json.loads(output)
    wrong, long = run["cases"]
    assert wrong["failures"] == [
        'contains Tokyo at answer (got "Osaka is big.")',
        "exact 2 at words (got 3)",
        'regex ^T at answer (got "Osaka is big.")',
    ]
    schema, exact = long["failures"]
    assert schema.startswith(
        "json_schema {'type': 'object', 'required': ['sources']} ('sources' is a required property; got {"
    )
    assert exact.startswith('exact short at answer (got "word word ')
    assert exact.endswith("…)") and len(exact) < 200  # the actual value is clipped, not the whole output

    code, table = stepline("eval", "--dir", str(root))
    assert 'contains Tokyo at answer (got "Osaka is big.")' in table
