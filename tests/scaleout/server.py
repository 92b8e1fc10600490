"""A Redis server of a test's own, on a spare port, for the tests that restart or misconfigure it (the
machine's own Redis, on 6379, is shared by every other test and is left alone)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, folder: Path, port: int, *settings: str, bind: str = "127.0.0.1") -> None:
        self.folder = folder
        self.port = port
        self.bind = bind
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, query: str = "", password: str = "") -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}{self.bind}:{self.port}/0" + (f"?{query}" if query else "")

    def start(self) -> None:
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", self.bind, "--dir", str(self.folder)]
        command += ["--save", "", "--logfile", str(self.folder / "redis.log"), *self.settings]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(host=self.bind, port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.exceptions.AuthenticationError:
                    return  # it answers: a password is set (a test's --requirepass)
                except redis.exceptions.ConnectionError:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"redis-server exited: {(self.folder / 'redis.log').read_text()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer within 20 s")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: what a crash of the server does."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@contextmanager
def redis_server(folder: Path, port: int, *settings: str, bind: str = "127.0.0.1") -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(folder, port, *settings, bind=bind)
    try:
        server.start()
        yield server
    finally:
        server.kill()
