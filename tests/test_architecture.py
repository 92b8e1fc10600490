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


def _names(path: Path, word: str) -> list[str]:
    """Where a name in the code at `path` (an import, attribute, function, class or argument) holds `word`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Name | ast.arg):
            names = [node.id if isinstance(node, ast.Name) else node.arg]
        elif isinstance(node, ast.Attribute | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.attr if isinstance(node, ast.Attribute) else node.name]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
        found += [f"{path}:{node.lineno}: {n}" for n in names if word in n.lower()]
    return found


def test_no_code_outside_the_sqlite_adapter_names_sqlite() -> None:
    """The store is chosen by URL: outside the SQLite adapter and the URL registry, "sqlite" may stand in
    documentation (docstrings, help and error text) but in no name the code uses: no import, attribute,
    function, class or argument. It fails on 5e9ef56 (the CLI imported open_sqlite)."""
    src = REPO / "src" / "stepline"
    skipped = {src / "adapters" / "__init__.py"}
    paths = [p for p in sorted(src.rglob("*.py")) if p not in skipped and src / "adapters" / "sqlite" not in p.parents]
    assert [hit for path in paths for hit in _names(path, "sqlite")] == []


def test_the_shared_suites_reach_stores_only_through_their_urls_and_protocols() -> None:
    """The conformance and durability suites run on every store of tests/stores.py: none of their code
    names a store, or reads an adapter's private parts."""
    paths = [p for d in ("conformance", "durability") for p in sorted((REPO / "tests" / d).glob("*.py"))]
    for word in ("sqlite", "memory"):
        assert [hit for path in paths for hit in _names(path, word)] == []
    private = [
        f"{path}:{node.lineno}: {node.attr}"
        for path in paths
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")  # a helper's own state
    ]
    assert private == []
