"""`stepline start --workers N`: one supervisor, N worker processes on one listening socket and one store.

The supervisor binds the port and passes the socket to every worker, so the kernel spreads connections
across them; each worker serves HTTP and runs steps on the shared store. SIGTERM (or SIGINT) is
passed on to the workers, which drain and exit; a worker that dies otherwise is started again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from rich.markup import escape

from stepline.adapters import STORE_ENV
from stepline.cli.console import console
from stepline.http.server import bind

_RESTART_PAUSE = 1.0


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the supervisor dies, even by `kill -9`: no orphans."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os._exit(1)


def supervise(
    root: Path, host: str, port: int, workers: int, options: list[str], *, store: str, shown: str, grace: float
) -> int:
    """Run `workers` worker processes on one socket until SIGTERM or SIGINT; returns the exit code.

    `options` are the command-line options every worker runs with; `store` is the URL of the store they
    share, passed in their environment (`shown` is how to print it)."""
    sock = bind(host, port)
    fd = sock.fileno()
    command = [sys.executable, "-m", "stepline", "worker", "--fd", str(fd), "--dir", str(root), "--grace", str(grace)]
    command += options

    env = {**os.environ, STORE_ENV: store}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, pass_fds=(fd,), env=env)

    procs = [spawn() for _ in range(workers)]
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    where = f"[{host}]" if ":" in host else host
    console.print(
        f"[bold green]Stepline start[/] · {Path(root).resolve().name} · {workers} workers · {escape(shown)} · "
        f"[bold]http://{where}:{sock.getsockname()[1]}[/]"
    )
    while not stopping:
        for i, proc in enumerate(procs):
            code = proc.poll()
            if code is not None and not stopping:
                console.print(f"[yellow]worker {proc.pid} exited with {code}; starting another[/]")
                time.sleep(_RESTART_PAUSE)
                procs[i] = spawn()
        time.sleep(0.2)
    deadline = time.monotonic() + grace + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    sock.close()
    return 0
