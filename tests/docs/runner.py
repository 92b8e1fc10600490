"""Runs the blocks of a Markdown page marked runnable (the conventions: tests/docs/README.md).

A page is split into blocks; the marked ones are grouped into sessions, and a session runs its blocks in
page order in a folder of its own, starting the servers its commands start and stopping them at its end.
Any failure is a `DocError` naming the page, the line of the block and what went wrong, with the output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

_MARKER = re.compile(r"^<!--\s*(run|output|excerpt|recipe)\b(.*?)-->\s*$")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
_FILE = re.compile(
    r"^(?:#|//)\s+(?P<path>(?:[\w.-]+/)*(?:[\w.-]+\.(?:py|toml|json|js|mjs|html|txt|cfg|ini|service|conf|env|md|yaml|yml)"
    r"|Dockerfile|Caddyfile|\.env))(?::.*)?$"
)
_SERVER = re.compile(r"^\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(stepline\s+(?:dev|start)\b|uvicorn\s)")
_ADDRESS = re.compile(r"https?://[\w.\[\]:-]+?:(\d+)")
_PORT = re.compile(r"(?<=[:= ])300(\d)\b")
_COMMANDS = {"bash", "sh", "shell"}


class DocError(AssertionError):
    """A runnable block of a page failed: where, and why."""


@dataclass
class Block:
    page: Path
    line: int  # of the fence, 1-based
    lang: str
    text: str
    kind: str  # run, output, excerpt
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        try:
            shown = self.page.relative_to(REPO)
        except ValueError:
            shown = self.page
        return f"{shown}:{self.line}"

    @property
    def file(self) -> str | None:
        first = self.text.split("\n", 1)[0]
        match = _FILE.match(first)
        return match["path"] if match else None


@dataclass
class Session:
    page: Path
    name: str
    blocks: list[Block]

    @property
    def options(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for block in self.blocks:
            if block.kind == "run":
                merged |= {k: v for k, v in block.options.items() if k in ("cwd", "venv")}
        return merged

    @property
    def id(self) -> str:
        try:
            shown = self.page.relative_to(REPO)
        except ValueError:
            shown = Path(self.page.name)
        return f"{shown}::{self.name}"


def parse(page: Path) -> list[Block]:
    """The marked blocks of a page, in order."""
    lines = page.read_text().split("\n")
    blocks: list[Block] = []
    pending: tuple[str, dict[str, str]] | None = None
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        if marker:
            pending = (marker[1], _options(marker[2]))
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if fence:
            indent, ticks, lang = fence[1], fence[2], fence[3]
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(ticks):
                body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
                i += 1
            if pending is not None:
                blocks.append(Block(page, start + 1, lang.lower(), "\n".join(body) + "\n", pending[0], pending[1]))
            pending = None
        elif lines[i].strip():
            pending = None  # a marker belongs to the fence right after it
        i += 1
    return blocks


def _options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in text.split():
        key, _, value = word.partition("=")
        options[key] = value or "yes"
    return options


def sessions(page: Path) -> list[Session]:
    """The page's sessions: its runnable blocks by session name, each output and excerpt in the session of
    the block before it (an excerpt alone on the page goes in a session of its own)."""
    found: dict[str, Session] = {}
    current = "default"
    for block in parse(page):
        if block.kind == "recipe":
            continue  # run by a test of its own (tests/docs/test_deploy_recipes.py)
        if block.kind == "run":
            current = block.options.get("session", "default")
        elif block.kind == "excerpt" and "session" in block.options:
            current = block.options["session"]
        found.setdefault(current, Session(page, current, [])).blocks.append(block)
    return list(found.values())


# -- running -------------------------------------------------------------------------------------------


def free_base_port() -> int:
    """A port P with P..P+9 free now: the page's 3000..3009."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base: int = s.getsockname()[1]
        if base > 65000:
            continue
        try:
            for port in range(base, base + 10):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no 10 free ports in a row")


@dataclass
class Runner:
    """Runs sessions. `wheel_dir` holds the wheel `pip install stepline` takes in a `venv` session."""

    workdir: Path
    wheel_dir: Path | None = None

    def run(self, session: Session) -> None:
        state = _State(self, session)
        try:
            for block in session.blocks:
                state.run(block)
        finally:
            state.close()


class _State:
    def __init__(self, runner: Runner, session: Session) -> None:
        self.runner = runner
        self.session = session
        self.port = free_base_port()
        folder = runner.workdir / re.sub(r"\W+", "-", session.id).strip("-")
        folder.mkdir(parents=True, exist_ok=True)
        self.cwd = REPO if session.options.get("cwd") == "repo" else folder / "project"
        self.cwd.mkdir(exist_ok=True)
        self.logs = folder / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = self._env(folder)
        self.servers: list[tuple[subprocess.Popen[bytes], Path, Block]] = []
        self.last_output: tuple[Block, str] | None = None
        self.dev_running = False

    def _env(self, folder: Path) -> dict[str, str]:
        if "venv" in self.session.options:
            env = newcomer_env(self.runner.wheel_dir)
            env["PIP_REQUIRE_VIRTUALENV"] = "1"  # pip refuses any virtualenv but the one the page makes
            bin_dir = Path(sys.base_prefix) / "bin"
        else:
            env, bin_dir = _clean_env(), BIN
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env | {"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}

    def ports(self, text: str) -> str:
        return _PORT.sub(lambda m: str(self.port + int(m[1])), text)

    def run(self, block: Block) -> None:
        if block.kind == "output":
            self._check_output(block)
        elif block.kind == "excerpt":
            check_excerpt(block, self.cwd)
        elif block.file is not None:
            self._write(block)
        elif block.lang in _COMMANDS:
            self._commands(block)
        elif block.lang == "python":
            self._python(block)
        else:
            raise DocError(f"{block.where}: a runnable {block.lang or 'plain'} block that names no file")

    def _write(self, block: Block) -> None:
        assert block.file is not None
        target = self.cwd / block.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.ports(block.text))
        if self.dev_running and target.suffix in (".py", ".toml"):
            time.sleep(1.0)  # the reload's debounce (200 ms) and the load itself

    def _commands(self, block: Block) -> None:
        """The block as one script, split at the servers it starts: the lines before a server run, then
        the server starts (and answers), then the lines after it run."""
        lines = self.ports(block.text).replace("\\\n", " ").split("\n")
        if "background" in block.options:
            self._start(block, "\n".join(lines))
            return
        outputs: list[str] = []
        part: list[str] = []
        for line in [*lines, ""]:
            if _SERVER.match(line):
                outputs.append(self._shell(block, part))
                part = []
                self._start(block, line.split(" #", 1)[0].rstrip().removesuffix("&"))
            else:
                part.append(line)
        outputs.append(self._shell(block, part))
        self.last_output = (block, "".join(outputs))

    def _shell(self, block: Block, lines: list[str]) -> str:
        if not any(line.strip() and not line.strip().startswith("#") for line in lines):
            return ""
        # What a terminal keeps from one command to the next: the folder, and the environment (a
        # `source .venv/bin/activate`, an `export`).
        cwd_file, env_file = self.logs / "cwd", self.logs / "env"
        cwd_file.unlink(missing_ok=True)
        env_file.unlink(missing_ok=True)
        keep = f"pwd > {shlex.quote(str(cwd_file))}; env -0 > {shlex.quote(str(env_file))}"
        prelude = f"set -euo pipefail\ntrap {shlex.quote(keep)} EXIT\n"
        output = self._execute(block, ["bash", "-c", prelude + "\n".join(lines)])
        if cwd_file.exists():
            self.cwd = Path(cwd_file.read_text().strip())
        if env_file.exists():
            pairs = (item.partition("=") for item in env_file.read_text().split("\0") if "=" in item)
            self.env = {k: v for k, _, v in pairs if k not in ("PWD", "OLDPWD", "SHLVL", "_")}
        return output

    def _execute(self, block: Block, argv: list[str], note: str = "") -> str:
        timeout = float(block.options.get("timeout", 120))
        try:
            done = subprocess.run(
                argv, cwd=self.cwd, env=self.env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
            raise DocError(f"{block.where}: did not finish within {timeout:g} s\n{out[-4000:]}") from None
        output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        failed = done.returncode != 0
        if failed != ("fails" in block.options):
            what = f"exited {done.returncode}" if failed else "succeeded, but the page says it fails"
            raise DocError(f"{block.where}: the block {what}{' ' + note if note else ''}\n{output[-4000:]}")
        return output

    def _python(self, block: Block) -> None:
        if "background" in block.options:
            script = self.logs / f"block-{block.line}.py"
            script.write_text(self.ports(block.text))
            self._start(block, f"python {shlex.quote(str(script))}")
            return
        output = self._execute(block, ["python", "-c", self.ports(block.text)])
        self.last_output = (block, output)

    def _start(self, block: Block, line: str) -> None:
        settings = self.cwd / "stepline.toml"
        sets_port = settings.exists() and re.search(r"(?m)^\s*port\s*=", settings.read_text())
        if re.match(r"\s*stepline\s+(dev|start)\b", line) and "--port" not in line and not sets_port:
            line = f"{line.rstrip()} --port {self.port}"  # the page's 3000, as every other 3000 of it
        log = self.logs / f"server-{block.line}-{len(self.servers)}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            ["bash", "-c", line.strip()],  # its own process group: stopped whole at the end
            cwd=self.cwd,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        handle.close()
        self.servers.append((process, log, block))
        deadline = time.monotonic() + float(block.options.get("timeout", 60))
        port: int | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DocError(
                    f"{block.where}: `{line.strip()}` exited {process.returncode}\n{log.read_text()[-4000:]}"
                )
            if port is None:
                found = _ADDRESS.search(log.read_text(errors="replace"))
                port = int(found[1]) if found else None
            if port is not None and _answers(port, line):
                self.dev_running = self.dev_running or "stepline dev" in line
                return
            time.sleep(0.1)
        raise DocError(f"{block.where}: `{line.strip()}` did not answer in time\n{log.read_text()[-4000:]}")

    def _check_output(self, block: Block) -> None:
        if self.last_output is None:
            raise DocError(f"{block.where}: an output block with no command block before it")
        source, output = self.last_output
        problem = match_output(self.ports(block.text), output)
        if problem:
            raise DocError(f"{block.where}: the output of the block at line {source.line} {problem}\n{output[-4000:]}")

    def close(self) -> None:
        for process, _, _ in self.servers:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process, _, _ in self.servers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _clean_env() -> dict[str, str]:
    """This environment without what the test run set (its store, pytest's, its virtualenv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PYTEST_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    return env


def newcomer_env(wheel_dir: Path | None) -> dict[str, str]:
    """A newcomer's machine: no Stepline on the PATH (the suite's virtualenv left out) until one is
    installed, and `pip install stepline` takes the wheel built from this checkout."""
    env = _clean_env()
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if wheel_dir is not None:
        env["PIP_FIND_LINKS"] = str(wheel_dir)
    return env


def _answers(port: int, line: str) -> bool:
    path = "/" if line.strip().startswith("uvicorn") or "python " in line else "/__stepline/live"
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0)
    except httpx.HTTPError:
        return False
    return path == "/" or response.status_code == 200


def _norm(text: str) -> str:
    return " ".join(text.split())


def match_output(expected: str, output: str) -> str | None:
    """None if every line of `expected` appears in `output`, in order (`...` matches within a line)."""
    lines = [_norm(line) for line in output.split("\n")]
    at = 0
    for want in (line for line in expected.split("\n") if line.strip()):
        wanted = _norm(want)
        pattern = re.compile(".*".join(re.escape(part) for part in wanted.split("...")))
        while at < len(lines) and not pattern.search(lines[at]):
            at += 1
        if at == len(lines):
            return f"has no line {want.strip()!r} (after the lines matched before it)"
        at += 1
    return None


def check_excerpt(block: Block, cwd: Path = REPO) -> None:
    """The block's lines are the named file's, in order; a line `...` stands for lines left out. The file
    is the session's (one the page made, as `stepline create` does), else the repository's."""
    if block.file is None:
        raise DocError(f"{block.where}: an excerpt must name its file on its first line (# path/to/file.py)")
    path = cwd / block.file if (cwd / block.file).exists() else REPO / block.file
    if not path.exists():
        raise DocError(f"{block.where}: the excerpt quotes {block.file}, which does not exist")
    source = path.read_text().split("\n")
    at = 0
    chunk_start = True
    for number, want in enumerate(block.text.rstrip("\n").split("\n")[1:], start=2):
        if want.strip() == "...":
            chunk_start = True
            continue
        if chunk_start:
            while at < len(source) and source[at].rstrip() != want.rstrip():
                at += 1
            chunk_start = False
        elif at < len(source) and source[at].rstrip() != want.rstrip():
            at = len(source)
        if at >= len(source):
            raise DocError(
                f"{block.where}: line {number} of the excerpt is not in {block.file} where the excerpt says: "
                f"{want.strip()!r}"
            )
        at += 1


def recipe(page: Path, name: str) -> Block:
    """The block of `page` marked `<!-- recipe NAME -->`."""
    [block] = [b for b in parse(page) if b.kind == "recipe" and name in b.options]
    return block


def pages() -> Iterator[Path]:
    yield REPO / "README.md"
    yield from sorted((REPO / "docs").glob("*.md"))
