"""`[llm]` in stepline.toml and the environment: what ctx.llm connects to, and clear errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepline import ProjectLoadError, Stepline
from stepline.steps.settings import load_settings
from stepline.testing import ScriptedLLM, serve

from ..conftest import ProjectFactory


def write(root: Path, toml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stepline.toml").write_text(toml)
    return root


def test_the_file_sets_the_endpoint_model_and_prices(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        """
[llm]
base_url = "http://127.0.0.1:9999/v1/"
model = "small"
timeout = 5

[llm.prices.small]
input = 0.5
output = 1.5
""",
    )
    llm = load_settings(root, environ={}).llm
    assert (llm.base_url, llm.model, llm.timeout) == ("http://127.0.0.1:9999/v1", "small", 5)
    assert llm.price("small") is not None and llm.price("other") is None


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    root = write(tmp_path, '[llm]\nbase_url = "http://file/v1"\nmodel = "file-model"\n')
    env = {"STEPLINE_LLM_BASE_URL": "http://env/v1", "STEPLINE_LLM_MODEL": "env-model", "STEPLINE_LLM_API_KEY": "k"}
    llm = load_settings(root, environ=env).llm
    assert (llm.base_url, llm.model, llm.key()) == ("http://env/v1", "env-model", "k")
    assert load_settings(tmp_path / "none", environ={"OPENAI_BASE_URL": "http://o/v1"}).llm.base_url == "http://o/v1"


def test_a_key_in_the_file_is_refused(tmp_path: Path) -> None:
    root = write(tmp_path, '[llm]\napi_key = "sk-123"\n')
    with pytest.raises(ProjectLoadError) as err:
        load_settings(root, environ={})
    (problem,) = err.value.problems
    assert (problem.file, problem.field) == ("stepline.toml", "llm.api_key")
    assert "api_key_env" in problem.fix


def test_bad_values_name_the_file_the_field_and_the_fix(tmp_path: Path) -> None:
    root = write(tmp_path, '[llm]\nbase_url = "localhost:8080"\ntimeout = -1\nmodle = "x"\n')
    with pytest.raises(ProjectLoadError) as err:
        load_settings(root, environ={})
    found = {p.field: p for p in err.value.problems}
    assert set(found) == {"llm.base_url", "llm.timeout", "llm.modle"}
    assert "http://" in found["llm.base_url"].fix
    assert all(p.file == "stepline.toml" for p in err.value.problems)
    write(tmp_path, "[llm\n")
    with pytest.raises(ProjectLoadError, match="not valid TOML"):
        load_settings(root, environ={})


REDACTED = {
    "privacy.py": """
        def scrub(messages):
            return [{**m, "content": m["content"].replace("4111-1111", "[card]")} for m in messages]
    """,
    "stepline.toml": """
        [llm]
        redact = "privacy:scrub"
    """,
    "steps/ask_step.py": """
        config = {"type": "api", "name": "Ask", "path": "/ask", "method": "POST"}
        async def handler(req, ctx):
            return {"answer": (await ctx.llm.chat(req.body["q"])).text}
    """,
}


async def test_the_redaction_hook_cleans_what_the_trace_keeps_not_what_the_model_gets(
    make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ScriptedLLM("noted") as llm:
        monkeypatch.setenv("STEPLINE_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("STEPLINE_LLM_MODEL", "scripted")
        async with serve(make_project(REDACTED)) as app:
            r = await app.client.post("/ask", json={"q": "my card is 4111-1111"})
            assert r.json() == {"answer": "noted"}
            trace = await app.trace(r.headers["x-trace-id"])
    (call,) = [rec.data for rec in trace if rec.kind == "llm"]
    assert call["messages"] == [{"role": "user", "content": "my card is [card]"}]
    assert llm.requests[0]["messages"] == [{"role": "user", "content": "my card is 4111-1111"}]


def test_an_app_starts_without_any_llm_settings(make_project: ProjectFactory) -> None:
    app = Stepline(make_project({}), store="memory://")
    assert app.settings.llm.model is None


def test_stepline_check_reports_bad_llm_settings(make_project: ProjectFactory) -> None:
    from typer.testing import CliRunner

    from stepline.cli import app

    root = make_project({"stepline.toml": '[llm]\napi_key = "sk-1"\n'})
    result = CliRunner().invoke(app, ["check", "--dir", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "stepline.toml" in result.output and "llm.api_key" in result.output and "api_key_env" in result.output


def test_the_mcp_table_lists_what_stepline_mcp_serves_and_names_mistakes(tmp_path: Path) -> None:
    root = write(tmp_path, '[mcp]\nsteps = ["GetWeather"]\ntopics = ["weather.alert"]\n')
    mcp = load_settings(root, environ={}).mcp
    assert (mcp.steps, mcp.topics, mcp.exposes_nothing) == (["GetWeather"], ["weather.alert"], False)
    assert load_settings(tmp_path / "none", environ={}).mcp.exposes_nothing  # nothing unless listed

    write(tmp_path, '[mcp]\nsteps = "GetWeather"\ntools = ["x"]\n\n[mpc]\nsteps = []\n')
    with pytest.raises(ProjectLoadError) as err:
        load_settings(root, environ={})
    found = {p.field: p for p in err.value.problems}
    assert set(found) == {"mcp.steps", "mcp.tools", "mpc"}
    assert 'steps = ["GetWeather"]' in found["mcp.steps"].fix
    assert "steps = [...] and topics = [...]" in found["mcp.tools"].fix
    assert "[llm], [mcp]" in found["mpc"].fix
