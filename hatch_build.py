"""A hatchling build hook: the wheel ships the Workbench page, built from workbench/ when it is missing.

The page (React + Vite, in workbench/) is built into src/stepline/_workbench_static/, which is git-ignored
and shipped in the wheel through the wheel target's `artifacts`. Every build of the wheel target runs this
hook: `pip install .`, `pip install -e .`, `pip wheel .`, `python -m build` (whose wheel is built from the
sdist, which carries workbench/'s sources). Where the page is built already, nothing runs and Node.js is
not needed; otherwise it runs `npm ci` and `npm run build` in workbench/, and fails with a message that
says Node.js is needed when npm is not found. A built wheel needs no Node.js to install or to serve the page.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "workbench"
PAGE = "src/stepline/_workbench_static"
NODE = "Node.js 20.19+ or 22.12+ with npm"  # what Vite needs: workbench/node_modules/vite/package.json


class WorkbenchBuildError(RuntimeError):
    """The Workbench page could not be built; the message says why and what to do."""


def page_is_built(root: Path) -> bool:
    assets = root / PAGE / "assets"
    return (root / PAGE / "index.html").is_file() and any(assets.glob("*.js"))


def build_page(root: Path) -> None:
    """Build the page with npm into PAGE, or raise WorkbenchBuildError."""
    if not (root / SOURCE / "package.json").is_file():
        raise WorkbenchBuildError(
            f"The Workbench page is not built ({PAGE}/index.html is missing) and its sources are not here "
            f"({SOURCE}/package.json is missing): build from a full clone of the repository or its sdist."
        )
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise WorkbenchBuildError(
            "Node.js (with npm) is required to build the Workbench page, and npm or node is not on PATH. "
            f"Building stepline from source (`pip install .`, `pip install -e .`, a wheel from a clone or from "
            f"the sdist) builds the page from {SOURCE}/ with npm when {PAGE}/ is not built. Install {NODE} "
            "from https://nodejs.org/en/download or your system's packages (e.g. `apt-get install nodejs npm`), "
            "then build again. Or install a prebuilt stepline wheel: it has the page inside and needs no Node.js."
        )
    for command in ([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], [npm, "run", "build"]):
        try:
            subprocess.run(command, cwd=root / SOURCE, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            shown = " ".join(["npm", *command[1:]])
            raise WorkbenchBuildError(
                f"Building the Workbench page failed: `{shown}` in {SOURCE}/ failed ({e}). It needs {NODE} "
                "and the npm registry (or npm's cache); see npm's output above."
            ) from e
    if not page_is_built(root):
        raise WorkbenchBuildError(
            f"Building the Workbench page ran but wrote no {PAGE}/index.html and assets/*.js: "
            f"check outDir in {SOURCE}/vite.config.ts."
        )


class WorkbenchBuildHook(BuildHookInterface):
    PLUGIN_NAME = "workbench"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if page_is_built(root):
            self.app.display_info(f"The Workbench page is built already ({PAGE}); not rebuilding it.")
            return
        self.app.display_info(f"Building the Workbench page from {SOURCE}/ with npm ...")
        build_page(root)
