"""docs/architecture.md's table of layers is the import contract `make lint` checks, in the same order."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).parent.parent


def test_the_documented_layers_are_the_checked_ones() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    checked = [layer.strip("()").removeprefix("stepline.") for layer in layers[:-1]]  # the last: the bottom
    page = (REPO / "docs" / "architecture.md").read_text()
    documented = re.findall(r"^\| `(\w+)` \| ", page, re.M)
    assert documented == checked
    for module in layers[-1].split(":"):
        assert module.strip().removeprefix("stepline.") + ".py" in page  # the bottom, named in the tree


def test_no_code_outside_the_sqlite_adapter_names_sqlite() -> None:
    """The store is chosen by URL: outside the SQLite adapter and the URL registry, "sqlite" may stand in
    documentation (docstrings, help and error text) but in no name the code uses: no import, attribute,
    function, class or argument."""
    src = REPO / "src" / "stepline"
    allowed = {src / "adapters" / "__init__.py"}
    named = []
    for path in sorted(src.rglob("*.py")):
        if path in allowed or (src / "adapters" / "sqlite") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Name | ast.arg):
                names = [node.id if isinstance(node, ast.Name) else node.arg]
            elif isinstance(node, ast.Attribute | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.attr if isinstance(node, ast.Attribute) else node.name]
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            named += [f"{path.relative_to(src)}:{node.lineno}: {n}" for n in names if "sqlite" in n.lower()]
    assert named == []
