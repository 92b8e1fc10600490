"""Projects written for Motia run on Stepline unchanged: a middleware writing to the request, a logger given
any value, steps under src/, the project folder as the working directory, the project's .env, and the
emit labels Motia draws."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from stepline import ProjectLoadError, load_project
from stepline.testing import serve

from .conftest import ProjectFactory, free_port
from .test_cli_output import children, cli, cli_env, running, wait_for

# -- a middleware writes to the request (item 1) -------------------------------------------------------

MIDDLEWARE = {
    "steps/me_step.py": """
        async def auth(req, ctx, next):
            req["user"] = {"id": req.headers.get("x-user")}   # as a Motia middleware does
            req["body"] = {"seen": True}                      # the request's own keys write its attributes
            return await next()

        config = {"type": "api", "name": "Me", "path": "/me", "method": "POST", "middleware": [auth]}

        async def handler(req, ctx):
            return {
                "user": req.get("user"), "indexed": req["user"], "has": "user" in req, "missing": req.get("nope"),
                "keys": list(req), "body": req.body, "bodyKey": req["body"],
            }
    """,
}


async def test_middleware_writes_to_the_request_and_the_handler_reads_it(make_project: ProjectFactory) -> None:
    async with serve(make_project(MIDDLEWARE)) as app:
        response = await app.client.post("/me", headers={"x-user": "u-7"}, json={"a": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == body["indexed"] == {"id": "u-7"}
    assert body["has"] is True and body["missing"] is None
    assert body["keys"] == ["body", "pathParams", "queryParams", "headers", "rawBody", "method", "path", "user"]
    assert body["body"] == body["bodyKey"] == {"seen": True}


# -- the logger takes any value (item 2) ---------------------------------------------------------------

LOGGING = {
    "steps/log_step.py": """
        from pydantic import BaseModel

        class Order(BaseModel):
            id: str
            total: float

        class Opaque:
            def __repr__(self):
                return "<Opaque>"

        config = {"type": "api", "name": "Log", "path": "/log", "method": "POST"}

        async def handler(req, ctx):
            ctx.logger.info("a string", "just text")
            ctx.logger.info("a list", [1, "two"])
            ctx.logger.info("a model", Order(id="o-1", total=9.5))
            ctx.logger.warn("not JSON", {"when": {1, 2}, "what": Opaque()})
            ctx.logger.error("an object", Opaque(), attempt=2)
            ctx.logger.debug("a request", req)
            ctx.logger.info("still logging")
            return {"ok": True}
    """,
}


async def test_logger_accepts_any_value_and_never_raises(make_project: ProjectFactory) -> None:
    async with serve(make_project(LOGGING)) as app:  # sqlite: the trace is stored as JSON
        response = await app.client.post("/log", json={"n": 1})
        assert response.status_code == 200, response.text
        records = await app.trace(response.headers["x-trace-id"])
    logged = {r.data["message"]: r.data["fields"] for r in records if r.kind == "log"}
    assert logged["a string"] == {"value": "just text"}
    assert logged["a list"] == {"value": [1, "two"]}
    assert logged["a model"] == {"id": "o-1", "total": 9.5}
    assert logged["not JSON"] == {"when": [1, 2], "what": "<Opaque>"}
    assert logged["an object"] == {"value": "<Opaque>", "attempt": 2}
    assert logged["a request"]["body"] == {"n": 1} and logged["a request"]["method"] == "POST"
    assert logged["still logging"] == {}


# -- steps under src/ (item 3) -------------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return root


SRC_ONLY = {
    "src/hello/helpers.py": "GREETING = 'hello'\n",
    "src/hello/hello_api_step.py": """
        from .helpers import GREETING
        from src.hello.helpers import GREETING as SAME
        config = {"type": "api", "name": "Hello", "path": "/hello", "method": "GET", "emits": ["greeted"]}
        async def handler(req, ctx):
            await ctx.emit("greeted", {"greeting": GREETING})
            return {"greeting": SAME}
    """,
    "src/hello/count.step.py": """
        config = {"type": "event", "name": "Count", "subscribes": ["greeted"]}
        async def handler(input, ctx):
            await ctx.state.increment("greetings", input["greeting"])
    """,
}


async def test_steps_under_src_are_found(tmp_path: Path) -> None:
    root = write(tmp_path / "motia-app", SRC_ONLY)  # no steps/ folder at all, as Motia's templates
    project = load_project(root)
    assert sorted(project.steps) == ["Count", "Hello"]
    assert project.steps["Hello"].rel == "src/hello/hello_api_step.py"
    async with serve(root) as app:
        assert (await app.client.get("/hello")).json() == {"greeting": "hello"}
        await app.settle()
        assert await app.state("greetings", "hello") == 1


def test_steps_in_both_steps_and_src_load_together(tmp_path: Path) -> None:
    root = write(tmp_path / "both", SRC_ONLY)
    write(root, {"steps/other_step.py": 'config = {"type": "noop", "name": "Other"}\n'})
    assert sorted(load_project(root).steps) == ["Count", "Hello", "Other"]


def test_a_project_with_neither_folder_names_both(tmp_path: Path) -> None:
    with pytest.raises(ProjectLoadError) as info:
        load_project(tmp_path)
    [problem] = info.value.problems
    assert "no steps/ folder and no src/ folder" in problem.message
    assert "steps/ or src/" in problem.fix
    result = cli("check", "--dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "no src/ folder" in result.stderr


# -- the project folder is the working directory (item 4) ----------------------------------------------

WHERE = {
    "steps/where_step.py": """
        import os
        config = {"type": "api", "name": "Where", "path": "/where", "method": "GET"}
        async def handler(req, ctx):
            with open("made-by-a-step.txt", "w") as f:   # a relative path, as step code writes them
                f.write("here")
            return {"cwd": os.getcwd()}
    """,
    "steps/write_step.py": """
        config = {"type": "event", "name": "Write", "subscribes": ["write.it"]}
        async def handler(input, ctx):
            with open("written-by-an-event.txt", "w") as f:
                f.write("here")
    """,
}


def test_dev_runs_in_the_project_folder_and_db_stays_where_typed(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(WHERE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    args = ("dev", "--dir", "../project", "--port", str(port), "--db", "mine.db")  # both relative to elsewhere
    with running(*args, cwd=elsewhere, port=port, log=tmp_path / "dev.log"):
        assert httpx.get(f"http://127.0.0.1:{port}/where").json() == {"cwd": str(root)}
    assert (root / "made-by-a-step.txt").exists() and not (elsewhere / "made-by-a-step.txt").exists()
    assert (elsewhere / "mine.db").exists() and not (root / "mine.db").exists()


def test_start_and_its_workers_run_in_the_project_folder(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(WHERE)
    port = free_port()
    args = ("start", "--dir", str(root), "--port", str(port), "--workers", "2")
    with running(*args, cwd=tmp_path, port=port, log=tmp_path / "start.log") as supervisor:
        wait_for(lambda: len(children(supervisor.pid)) == 2, "two workers")
        assert httpx.get(f"http://127.0.0.1:{port}/where").json() == {"cwd": str(root)}
        for worker in children(supervisor.pid):
            assert Path(f"/proc/{worker}/cwd").resolve() == root
    assert (root / "made-by-a-step.txt").exists()


def test_emit_local_runs_in_the_project_folder(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(WHERE)
    result = cli("emit", "--local", "--dir", str(root), "--topic", "write.it", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (root / "written-by-an-event.txt").exists() and not (tmp_path / "written-by-an-event.txt").exists()


def test_eval_runs_in_the_project_folder(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(WHERE)
    (root / "evals").mkdir()
    (root / "evals" / "where.yaml").write_text(
        f"target: GET /where\noutput: cwd\ncases:\n  - input: {{}}\n    expect: {json.dumps(str(root))}\n"
    )
    result = cli("eval", "--dir", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / ".stepline" / "evals" / "where").is_dir()  # the results, under the project


def test_mcp_runs_in_the_project_folder(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(WHERE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepline", "mcp", "--dir", str(root)],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        # The project is loaded (and the folder entered) before the first MCP message is read.
        while Path(f"/proc/{proc.pid}/cwd").resolve() != root and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        assert Path(f"/proc/{proc.pid}/cwd").resolve() == root
    finally:
        proc.kill()
        proc.communicate()


# -- the project's .env (item 5) -----------------------------------------------------------------------

ENV = {
    "steps/env_step.py": """
        import os
        config = {"type": "api", "name": "Env", "path": "/env", "method": "GET"}
        async def handler(req, ctx):
            return {"fromFile": os.environ.get("FROM_DOTENV"), "alreadySet": os.environ.get("ALREADY_SET"),
                    "model": ctx.llm.settings.model}
    """,
    "steps/at_import_step.py": """
        import os
        TOKEN = os.environ["FROM_DOTENV"]   # read when the module loads, as settings modules do
        config = {"type": "noop", "name": "AtImport"}
    """,
    ".env": """
        FROM_DOTENV=from-the-file
        ALREADY_SET=from-the-file
        STEPLINE_LLM_MODEL=model-from-dotenv
    """,
}


def test_dotenv_is_loaded_before_settings_and_never_overrides(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(ENV)
    port = free_port()
    env = {"ALREADY_SET": "from-the-environment"}
    with running(
        "dev", "--dir", str(root), "--port", str(port), cwd=tmp_path, port=port, log=tmp_path / "d.log", env=env
    ):
        answer = httpx.get(f"http://127.0.0.1:{port}/env").json()
    assert answer == {"fromFile": "from-the-file", "alreadySet": "from-the-environment", "model": "model-from-dotenv"}
    checked = cli("check", "--dir", str(root), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "FROM_DOTENV" not in os.environ  # the test process itself is left alone


# -- the graph draws labels and is never wrapped (item 6) ----------------------------------------------

LABELLED = {
    "steps/send_invoice_with_a_long_name_step.py": """
        config = {"type": "event", "name": "SendTheMonthlyInvoiceToTheCustomerByEmail",
                  "subscribes": ["invoice.approved.by.the.finance.team"],
                  "emits": ["invoice.sent", {"topic": "invoice.bounced", "label": "address unknown"}]}
        async def handler(input, ctx): ...
    """,
    "steps/approve_step.py": """
        config = {"type": "api", "name": "Approve", "method": "POST",
                  "path": "/invoices/{id}/approve/with/a/rather/long/path/that/goes/on/and/on",
                  "emits": ["invoice.approved.by.the.finance.team"]}
        async def handler(req, ctx): ...
    """,
    "steps/bounced_step.py": """
        config = {"type": "event", "name": "Bounced", "subscribes": ["invoice.bounced"]}
        async def handler(input, ctx): ...
    """,
    "steps/sent_step.py": """
        config = {"type": "event", "name": "Sent", "subscribes": ["invoice.sent"]}
        async def handler(input, ctx): ...
    """,
}


def test_mermaid_draws_an_emits_label_and_is_never_wrapped(make_project: ProjectFactory) -> None:
    root = make_project(LABELLED)
    result = cli("graph", "--format", "mermaid", cwd=root)  # stdout is a pipe, no COLUMNS: rich says 80
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    sender = "SendTheMonthlyInvoiceToTheCustomerByEmail"
    assert f"    {sender} -->|address unknown| Bounced" in lines
    assert f"    {sender} -->|invoice.sent| Sent" in lines  # no label: the topic
    assert f"    Approve -->|invoice.approved.by.the.finance.team| {sender}" in lines
    node = next(line for line in lines if line.startswith("    Approve["))
    assert len(node) > 80 and node.endswith(":::api")  # one line, however long

    as_json = cli("graph", "--format", "json", cwd=root)
    assert json.loads(as_json.stdout)["steps"]  # parses
    trigger = '"trigger": "POST /invoices/{id}/approve/with/a/rather/long/path/that/goes/on/and/on"'
    assert any(line.strip().startswith(trigger) and len(line) > 80 for line in as_json.stdout.splitlines())


def test_mermaid_edge_text_that_would_break_the_diagram_is_escaped(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
                config = {"type": "event", "name": "A", "subscribes": ["x"],
                          "emits": [{"topic": "y", "label": 'yes | "no"'}]}
                async def handler(input, ctx): ...
            """,
            "steps/b_step.py": """
                config = {"type": "event", "name": "B", "subscribes": ["y"]}
                async def handler(input, ctx): ...
            """,
        }
    )
    lines = cli("graph", "--format", "mermaid", cwd=root).stdout.splitlines()
    assert "    A -->|yes #124; #quot;no#quot;| B" in lines
