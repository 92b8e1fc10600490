"""Many processes opening one new database file at the same instant all succeed.

Turning on WAL in a new file takes a read lock and then a write lock, and SQLite answers a process that
holds the one and waits for the other with SQLITE_BUSY at once (no busy timeout: waiting could
deadlock), so a few of many processes opening a new file together failed with "database is locked".
`Database._connect` now takes turns until its busy timeout instead.

Real processes: the parent (which imported the adapter once) forks 120 children; in each round they
block on a pipe of that round, the parent closes it, and they all open that round's new file at once,
write one state value, close, and report. The race is narrow (the instant before the first of them has
written the file): one round showed it now and then, so there are many, on the same 120 children.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
import traceback
import warnings
from pathlib import Path

import pytest

from stepline.adapters.sqlite import open_sqlite

PROCESSES = 120
ROUNDS = 50  # one round in ten, at the fewest seen, showed the race on the base commit


def _child(n: int, files: list[Path], barriers: list[int], report: int) -> None:
    """In a forked child: for each round, wait at its barrier, open its file, write, close, report."""
    loop = asyncio.new_event_loop()
    for round_, (path, barrier) in enumerate(zip(files, barriers, strict=True)):
        os.read(barrier, 1)  # returns b"" in every child at once, when the parent closes the pipe
        try:
            adapters = open_sqlite(path)
            try:
                loop.run_until_complete(adapters.state.set("opened", str(n), {"pid": os.getpid()}))
            finally:
                loop.run_until_complete(adapters.close())
            outcome = "ok"
        except BaseException:
            outcome = traceback.format_exc().strip().splitlines()[-1][:300]
        os.write(report, f"{round_} {n} {outcome}\n".encode())  # under PIPE_BUF: one write, whole
    loop.close()


def _fork_children(files: list[Path]) -> tuple[list[int], list[int], int]:
    """The children's pids, the write ends of the rounds' barriers, the read end of their reports."""
    barriers = [os.pipe() for _ in files]
    report_read, report_write = os.pipe()
    pids = []
    for n in range(PROCESSES):
        with warnings.catch_warnings():  # 3.12+ warns of fork() beside other threads: the children use none of theirs
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(report_read)
                for _, write_end in barriers:
                    os.close(write_end)
                _child(n, files, [read_end for read_end, _ in barriers], report_write)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(report_write)
    for read_end, _ in barriers:
        os.close(read_end)
    return pids, [write_end for _, write_end in barriers], report_read


def _read_lines(fd: int, buffer: bytearray, count: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < count:
        if b"\n" not in buffer:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the children stopped reporting after {len(lines)} of {count}")
            buffer += chunk
            continue
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        lines.append(line.decode())
    return lines


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the children are forked")
def test_120_processes_opening_a_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    files = [tmp_path / f"round{r}" / "stepline.db" for r in range(ROUNDS)]
    for path in files:
        path.parent.mkdir()
    pids, barriers, reports = _fork_children(files)
    failures: list[str] = []
    buffer = bytearray()
    finished = False
    try:
        for round_, barrier in enumerate(barriers):
            time.sleep(0.02)  # every child is blocked on this round's pipe by now
            os.close(barrier)
            outcomes = _read_lines(reports, buffer, PROCESSES)
            failures += [f"round {round_ + 1}: {line}" for line in outcomes if not line.endswith(" ok")]
        finished = True
    finally:
        if not finished:  # children still wait at barriers: end them, they are this test's
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        os.close(reports)
    assert not failures, f"{len(failures)} of {ROUNDS * PROCESSES} opens failed:\n" + "\n".join(failures[:10])
    assert codes == [0] * PROCESSES
    for path in files:
        conn = sqlite3.connect(path)
        try:
            keys = {k for (k,) in conn.execute("SELECT key FROM state WHERE grp = 'opened'")}
        finally:
            conn.close()
        assert keys == {str(n) for n in range(PROCESSES)}, path
