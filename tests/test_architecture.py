"""docs/architecture.md's table of layers is the import contract `make lint` checks, in the same order."""

from __future__ import annotations

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
