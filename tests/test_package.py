"""The package ships whole: a wheel built from a clean clone (or from its sdist) has the Workbench page
inside, a build that needs the page and has no Node.js says so, and a built wheel serves the page where
there is no Node.js. Real builds (pip's isolated build environment fetches hatchling from the index) and
a real install; the build hook is hatch_build.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGE = "stepline/_workbench_static"
NODE_NEEDED = "Node.js (with npm) is required to build the Workbench page"
BUILD_TIMEOUT = 300


def clean_clone(target: Path) -> Path:
    """Copy what a fresh clone of the working tree would hold: tracked files and files not yet committed
    but not ignored. No node_modules, no built page (both git-ignored), whatever this checkout has."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        source = ROOT / rel
        if not source.is_file():  # deleted in the working tree, not yet committed
            continue
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / rel, follow_symlinks=False)
    assert (target / "workbench" / "package-lock.json").is_file()
    assert (target / "hatch_build.py").is_file()
    assert not (target / "src" / PAGE).exists()
    assert not (target / "workbench" / "node_modules").exists()
    return target


def no_node_path(folder: Path) -> str:
    """A PATH on which node and npm are not found (python and pip are run by their full paths)."""
    folder.mkdir()
    for tool in ("sh", "git"):
        found = shutil.which(tool)
        if found:
            (folder / tool).symlink_to(found)
    path = str(folder)
    assert shutil.which("node", path=path) is None
    assert shutil.which("npm", path=path) is None
    return path


def pip_wheel(source: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`pip wheel .` in source: what `pip install .` from a clone does to build stepline."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=env,
    )


def assert_has_page(wheel: Path) -> None:
    """The wheel holds the page and every JS and CSS asset that it loads."""
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        assert f"{PAGE}/index.html" in names, sorted(names)
        html = whl.read(f"{PAGE}/index.html").decode()
    assert "Stepline Workbench" in html
    assets = re.findall(r'/__workbench/(assets/[^"]+\.(?:js|css))"', html)
    assert any(a.endswith(".js") for a in assets), html
    for asset in assets:
        assert f"{PAGE}/{asset}" in names
    assert "stepline/http/admin.py" in names


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the clean clone, after the build; the wheel `pip wheel .` built there)."""
    clone = clean_clone(tmp_path_factory.mktemp("clone"))
    out = tmp_path_factory.mktemp("wheels")
    result = pip_wheel(clone, out)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("stepline-*.whl")
    return clone, wheel


@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_a_wheel_built_from_a_clean_clone_has_the_workbench_page(built: tuple[Path, Path]) -> None:
    _clone, wheel = built
    assert_has_page(wheel)


@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_building_without_nodejs_fails_saying_nodejs_is_required(tmp_path: Path) -> None:
    clone = clean_clone(tmp_path / "clone")
    env = {**os.environ, "PATH": no_node_path(tmp_path / "bin")}
    result = pip_wheel(clone, tmp_path / "out", env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert NODE_NEEDED in output, output
    assert "a prebuilt stepline wheel" in output and "needs no Node.js" in output
    assert "https://nodejs.org" in output
    assert not list((tmp_path / "out").glob("*.whl"))


@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_a_wheel_built_where_the_page_exists_does_not_rebuild_it_nor_need_nodejs(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    clone, _wheel = built
    index = clone / "src" / PAGE / "index.html"
    before = index.stat().st_mtime_ns
    env = {**os.environ, "PATH": no_node_path(tmp_path / "bin")}
    result = pip_wheel(clone, tmp_path / "out", env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert index.stat().st_mtime_ns == before
    (wheel,) = (tmp_path / "out").glob("stepline-*.whl")
    assert_has_page(wheel)


@pytest.mark.timeout(BUILD_TIMEOUT + 120)
def test_the_sdist_has_the_workbench_sources_and_a_wheel_built_from_it_has_the_page(tmp_path: Path) -> None:
    # `python -m build` builds the sdist, then the wheel from the unpacked sdist: the page must be built there.
    tool = tmp_path / "build-tool"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", tool, "build"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    clone = clean_clone(tmp_path / "clone")
    out = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), "."],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(tool)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (clone / "src" / PAGE).exists()  # built in the unpacked sdist, not here
    (sdist,) = out.glob("stepline-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for source in ("package.json", "package-lock.json", "vite.config.ts", "index.html", "src/main.tsx"):
        assert f"workbench/{source}" in names, sorted(names)
    assert "hatch_build.py" in names
    assert not [n for n in names if "node_modules" in n or "_workbench_static" in n]
    (wheel,) = out.glob("stepline-*.whl")
    assert_has_page(wheel)


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("content-type", ""), response.read().decode()


@pytest.mark.timeout(BUILD_TIMEOUT + 120)
def test_the_built_wheel_installs_and_serves_the_page_without_nodejs(built: tuple[Path, Path], tmp_path: Path) -> None:
    _clone, wheel = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    no_node = {**os.environ, "PATH": no_node_path(tmp_path / "bin")}
    no_node.pop("PYTHONPATH", None)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        env=no_node,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The runtime dependencies come from this repository's environment, after the new venv's own packages.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "repo_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = subprocess.run(
        [python, "-c", "import stepline; print(stepline.__file__)"],
        capture_output=True,
        text=True,
        env=no_node,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    package = Path(where.stdout.strip()).parent
    assert package == Path(site) / "stepline", package  # the wheel's, not the repository's editable install
    assert (package / "_workbench_static" / "index.html").is_file()

    project = tmp_path / "project"
    (project / "steps").mkdir(parents=True)
    (project / "steps" / "ping_step.py").write_text(
        'config = {"type": "api", "name": "Ping", "path": "/ping", "method": "GET", "emits": []}\n\n\n'
        "async def handler(req, ctx):\n"
        '    return {"status": 200, "body": {"pong": True}}\n'
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [python, "-m", "stepline", "dev", "--dir", str(project), "--port", str(port)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**no_node, "COLUMNS": "200"},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(f"{base}/ping")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        status, kind, html = get(f"{base}/__workbench/")
        assert status == 200
        assert kind.startswith("text/html")
        assert "<title>Stepline Workbench</title>" in html
        (script,) = re.findall(r'src="(/__workbench/assets/[^"]+\.js)"', html)
        status, kind, js = get(base + script)
        assert status == 200
        assert "javascript" in kind
        assert len(js) > 10_000
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, log.read_text()
