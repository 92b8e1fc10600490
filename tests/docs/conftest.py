"""The wheel a `venv` session installs: built once per test run from this checkout, as a user's
`pip wheel .` would (the Workbench page inside)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .runner import REPO


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    return target
