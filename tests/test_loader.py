"""Loading a project: discovery, both config formats, and every load error with its message."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepline import ApiConfig, EventConfig, ProjectLoadError, load_project
from stepline._errors import Problem

from .conftest import ProjectFactory

API = """
config = {"type": "api", "name": "%s", "path": "%s", "method": "%s", "emits": []}
async def handler(req, ctx):
    return {"status": 200, "body": {}}
"""
EVENT = """
config = {"type": "event", "name": "%s", "subscribes": ["%s"], "emits": []}
async def handler(input, ctx):
    pass
"""


def problems_of(root: Path) -> list[Problem]:
    with pytest.raises(ProjectLoadError) as info:
        load_project(root)
    return info.value.problems


def only(root: Path) -> Problem:
    problems = problems_of(root)
    assert len(problems) == 1, problems
    return problems[0]


def test_discovers_step_files_in_any_subfolder_both_namings(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": API % ("A", "/a", "GET"),
            "steps/deep/er/b.step.py": EVENT % ("B", "t"),
            "steps/deep/not_a_step_file.py": "raise RuntimeError('must not be imported')",
        }
    )
    project = load_project(root)
    assert sorted(project.steps) == ["A", "B"]
    assert project.steps["B"].rel == "steps/deep/er/b.step.py"


def test_steps_import_project_modules_without_sys_path_tricks(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "billing/__init__.py": "",
            "billing/money.py": "def cents(x): return round(x * 100)\n",
            "steps/billing/invoices/helpers.py": "PREFIX = 'INV-'\n",
            "steps/billing/invoices/create_invoice_step.py": """
            from billing.money import cents
            from steps.billing.invoices.helpers import PREFIX
            from .helpers import PREFIX as SAME
            assert PREFIX == SAME
            config = {"type": "event", "name": "CreateInvoice", "subscribes": ["invoice.requested"]}
            async def handler(input, ctx):
                return PREFIX + str(cents(input["amount"]))
        """,
        }
    )
    project = load_project(root)
    assert "CreateInvoice" in project.steps


def test_reloading_another_project_with_the_same_module_names(make_project: ProjectFactory, tmp_path: Path) -> None:
    first = make_project({"steps/lib.py": "NAME = 'first'\n", "steps/a_step.py": API % ("A", "/a", "GET")})
    other = tmp_path / "other"
    (other / "steps").mkdir(parents=True)
    (other / "steps" / "lib.py").write_text("NAME = 'second'\n")
    (other / "steps" / "b_step.py").write_text(
        "from steps.lib import NAME\nassert NAME == 'second'\n" + EVENT % ("B", "x")
    )
    assert list(load_project(first).steps) == ["A"]
    assert list(load_project(other).steps) == ["B"]


def test_typed_config_objects(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/typed_step.py": """
            from pydantic import BaseModel
            from stepline import EventConfig

            class Order(BaseModel):
                id: int

            config = EventConfig(name="Typed", subscribes=["order.placed"], input=Order, emits=["order.done"])
            async def handler(input, ctx):
                pass
        """
        }
    )
    step = load_project(root).steps["Typed"]
    assert isinstance(step.config, EventConfig)
    assert step.config.emit_topics == ["order.done"]
    assert step.config.input is not None and step.config.input.json_schema()["title"] == "Order"


def test_json_schema_dicts_and_model_json_schema_are_schemas(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            from pydantic import BaseModel
            class Body(BaseModel):
                month: str
            config = {"type": "api", "name": "A", "path": "/a/:id", "method": "post",
                      "bodySchema": Body.model_json_schema(),
                      "responseSchema": {200: {"type": "object"}, "404": Body}}
            async def handler(req, ctx): ...
        """
        }
    )
    config = load_project(root).steps["A"].config
    assert isinstance(config, ApiConfig)
    assert config.path == "/a/{id}" and config.method == "POST"
    assert sorted(config.response_schema) == [200, 404]


def test_missing_handler(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": 'config = {"type": "event", "name": "A", "subscribes": ["t"]}\n'})
    p = only(root)
    assert (p.file, p.field) == ("steps/a_step.py", "handler")
    assert "needs a handler" in p.message
    assert "async def handler(input, ctx)" in p.fix


def test_handler_with_the_wrong_arguments(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/c_step.py": 'config = {"type": "cron", "name": "C", "cron": "* * * * *"}\n'
            "async def handler(input, ctx):\n    pass\n"
        }
    )
    p = only(root)
    assert p.field == "handler" and p.line == 2
    assert "cron handlers are called with (ctx)" in p.message


def test_missing_config(make_project: ProjectFactory) -> None:
    p = only(make_project({"steps/a_step.py": "async def handler(input, ctx): ...\n"}))
    assert (p.file, p.field) == ("steps/a_step.py", "config")
    assert "no `config`" in p.message


def test_unknown_step_type_suggests_the_closest(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": 'config = {"type": "evnt", "name": "A"}\nasync def handler(i, c): ...\n'})
    p = only(root)
    assert (p.field, p.line) == ("type", 1)
    assert "'evnt' is not a step type" in p.message
    assert "api, event, cron, noop" in p.fix and "did you mean 'event'" in p.fix


def test_unknown_key_suggests_the_closest(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": EVENT.replace('"subscribes"', '"subscribes": ["t"], "emit"') % ("A", "t")})
    p = only(root)
    assert p.field == "emit" and "unknown config key 'emit'" in p.message and "did you mean 'emits'" in p.fix


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "has 3 fields; a cron expression has 5 or 6"),
        ("61 * * * *", "is not a valid cron expression"),
        ("every day", "has 2 fields"),
    ],
)
def test_bad_cron_expression(make_project: ProjectFactory, expression: str, message: str) -> None:
    root = make_project(
        {
            "steps/c_step.py": f'config = {{"type": "cron", "name": "C", "cron": "{expression}"}}\n'
            "async def handler(ctx): ...\n"
        }
    )
    p = only(root)
    assert (p.file, p.field, p.line) == ("steps/c_step.py", "cron", 1)
    assert message in p.message
    assert "5-field" in p.fix


def test_bad_timezone(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/c_step.py": 'config = {"type": "cron", "name": "C", "cron": "0 9 * * *", "timezone": "Mars/Base"}\n'
            "async def handler(ctx): ...\n"
        }
    )
    p = only(root)
    assert p.field == "timezone" and "'Mars/Base' is not a known time zone" in p.message


def test_two_steps_on_the_same_route(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": API % ("A", "/orders/:id", "GET"),
            "steps/b_step.py": API % ("B", "/orders/{orderId}", "GET"),
            "steps/c_step.py": API % ("C", "/orders/{id}", "DELETE"),  # another method: fine
        }
    )
    p = only(root)
    assert (p.file, p.field) == ("steps/b_step.py", "path")
    assert "route GET /orders/{orderId} is also served by steps/a_step.py (step 'A')" in p.message
    assert "change the path or the method" in p.fix


def test_duplicate_step_name(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": EVENT % ("Same", "t"), "steps/b_step.py": EVENT % ("Same", "u")})
    p = only(root)
    assert (p.file, p.field) == ("steps/b_step.py", "name")
    assert "step name 'Same' is already used by steps/a_step.py" in p.message


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ('{"month": "string"}', "is not a JSON Schema (it has no schema keyword"),
        ('{"type": "objekt"}', "invalid JSON Schema at type"),
        ("str", "got type"),
        ("Body(month='x')", "got an instance of Body, not the model class itself"),
    ],
)
def test_a_schema_that_is_not_a_schema(make_project: ProjectFactory, schema: str, message: str) -> None:
    root = make_project(
        {
            "steps/a_step.py": f"""
            from pydantic import BaseModel
            class Body(BaseModel):
                month: str
            config = {{"type": "api", "name": "A", "path": "/a", "method": "POST", "bodySchema": {schema}}}
            async def handler(req, ctx): ...
        """
        }
    )
    p = only(root)
    assert (p.file, p.field, p.line) == ("steps/a_step.py", "bodySchema", 4)
    assert message in p.message
    assert "Pydantic model class or a JSON Schema dict" in p.fix


def test_syntax_error_names_the_line(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": 'config = {"type": "event",\n  "name": "A" "subscribes": [}\n'})
    p = only(root)
    assert p.file == "steps/a_step.py" and p.line == 2
    assert p.message.startswith("syntax error:")
    assert "fix the syntax on line 2" in p.fix


def test_error_raised_while_importing(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": "import os\nvalue = 1 / 0\n"})
    p = only(root)
    assert p.line == 2 and "ZeroDivisionError" in p.message


def test_missing_module_says_what_to_install(make_project: ProjectFactory) -> None:
    p = only(make_project({"steps/a_step.py": "import not_installed_pkg_xyz\n"}))
    assert "install the package 'not_installed_pkg_xyz'" in p.fix


def test_every_problem_is_listed_not_just_the_first(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": "config = {\n",
            "steps/b_step.py": 'config = {"type": "nope", "name": "B"}\n',
            "steps/c_step.py": 'config = {"type": "event", "name": "C", "subscribes": ["t"]}\n',
        }
    )
    with pytest.raises(ProjectLoadError) as info:
        load_project(root)
    assert [p.file for p in info.value.problems] == ["steps/a_step.py", "steps/b_step.py", "steps/c_step.py"]
    text = str(info.value)
    assert text.startswith("3 problems in the project at")
    assert "steps/a_step.py:1" in text and "fix:" in text


def test_typed_config_with_bad_values_is_a_load_problem(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": """
            from stepline import ApiConfig
            config = ApiConfig(name="A", path="no-slash", method="FETCH")
            async def handler(req, ctx): ...
        """
        }
    )
    problems = problems_of(root)
    assert {p.field for p in problems} == {"path", "method"}
    assert all(p.line == 2 for p in problems)
    assert any('must start with "/"' in p.message for p in problems)


def test_reserved_paths(make_project: ProjectFactory) -> None:
    p = only(make_project({"steps/a_step.py": API % ("A", "/__stepline/x", "GET")}))
    assert p.field == "path" and "reserved" in p.message


def test_no_steps_folder(tmp_path: Path) -> None:
    p = only(tmp_path)
    assert "there is no steps/ folder" in p.message and "stepline create" in p.fix


def test_warnings_for_topics_nobody_subscribes_to_or_emits(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/a_step.py": 'config = {"type": "event", "name": "A", "subscribes": ["in"], "emits": ["out"]}\n'
            "async def handler(input, ctx): ...\n",
            "steps/gate_step.py": 'config = {"type": "noop", "name": "Gate", "virtualSubscribes": ["out"]}\n',
        }
    )
    warnings = load_project(root).warnings
    assert [(w.file, w.field, w.message, w.severity) for w in warnings] == [
        ("steps/a_step.py", "subscribes", "nobody emits 'in'", "warning"),
    ]
