"""`ctx.run_code`: run Python in a separate process with CPU, memory, time and output limits.

The child is a fresh `python -I -S` (isolated: no user site, no PYTHON* variables, no site-packages) in
an empty temporary folder, with an environment of nothing but PATH, LANG and a throwaway HOME, so the
secrets of the server's environment are not there to read. Limits are set with setrlimit before the
code starts: address space (memory), CPU seconds, file size, open files and processes; the wall-clock
timeout kills the whole process group. Where the kernel allows it (root, or unprivileged user
namespaces), the child also gets a network namespace of its own with no interfaces.

This bounds runaway and careless code, the usual output of a model. It is not a boundary against a
determined attacker (the child shares the kernel and can read world-readable files); run hostile code
in a VM or a container made for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_OUTPUT_LIMIT = 1_000_000  # bytes kept of each of stdout and stderr


@dataclass(frozen=True)
class CodeResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when the process was killed
    duration: float  # seconds
    timed_out: bool = False
    killed_by: str | None = None  # "timeout", "cpu", "memory" or a signal name
    truncated: bool = False  # an output was longer than the limit and was cut

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


async def run_code(
    code: str,
    *,
    timeout: float = 10.0,
    memory: int = 256 * 1024 * 1024,
    cpu: float | None = None,
    stdin: str = "",
    files: dict[str, str] | None = None,
    network: bool = False,
) -> CodeResult:
    """Run `code` and return its output. `memory` is in bytes; `cpu` (seconds) defaults to `timeout`."""
    if timeout <= 0 or memory <= 0:
        raise ValueError("timeout and memory must be above 0")
    cpu_seconds = max(1, int(cpu if cpu is not None else timeout + 1))
    workdir = await asyncio.to_thread(_prepare, code, files or {})
    try:
        # The child sets its own limits before it runs the code: a preexec_fn would run Python between
        # fork and exec in a process that has threads (the SQLite writer, the sync handlers' pool),
        # which the subprocess docs call unsafe (a lock held by another thread at the fork never frees).
        limits = _LIMITS.format(memory=memory, cpu=cpu_seconds, fsize=64 * 1024 * 1024)
        command = [sys.executable, "-I", "-S", "-c", limits]
        if not network and await asyncio.to_thread(_can_unshare_network):
            command = [_UNSHARE, "--net", "--", *command]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir), "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
            timed_out = False
        except TimeoutError:
            _kill_group(proc.pid)
            out, err = await proc.communicate()
            timed_out = True
        duration = time.monotonic() - started
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)
    code_ = proc.returncode
    killed_by = "timeout" if timed_out else _why(code_, err)
    truncated = len(out) > _OUTPUT_LIMIT or len(err) > _OUTPUT_LIMIT
    return CodeResult(
        out[:_OUTPUT_LIMIT].decode(errors="replace"),
        err[:_OUTPUT_LIMIT].decode(errors="replace"),
        None if timed_out or (code_ is not None and code_ < 0) else code_,
        duration,
        timed_out,
        killed_by,
        truncated,
    )


def _prepare(code: str, files: dict[str, str]) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="stepline-code-")).resolve()
    for name, content in files.items():
        target = (workdir / name).resolve()
        if workdir not in target.parents:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ValueError(f"file {name!r} would be written outside the sandbox folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    (workdir / "main.py").write_text(code)
    return workdir


# What the child runs first: the limits, then main.py as __main__ (so tracebacks name main.py, as before).
_LIMITS = """\
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu} + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
del resource
sys.argv = ["main.py"]
runpy.run_path("main.py", run_name="__main__")
"""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _why(code: int | None, err: bytes) -> str | None:
    if code == -signal.SIGXCPU:
        return "cpu"
    if code and b"MemoryError" in err[-2000:]:
        return "memory"
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return None


_UNSHARE = shutil.which("unshare") or "unshare"
_unshare_ok: bool | None = None


def _can_unshare_network() -> bool:
    """Whether `unshare --net` works here (root or user namespaces); checked once."""
    global _unshare_ok
    if _unshare_ok is None:
        import subprocess

        try:
            _unshare_ok = (
                subprocess.run([_UNSHARE, "--net", "--", "true"], capture_output=True, timeout=5).returncode == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            _unshare_ok = False
    return _unshare_ok
