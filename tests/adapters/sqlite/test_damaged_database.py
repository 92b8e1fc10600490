"""A damaged database file is refused with one line that names it and says what to do, and damage met
while running shows in /__stepline/health and in the log, once.

The damaged files are real: a database a real `stepline start` ran (events queued for later, dead
letters, state, traces, idempotency keys), checkpointed into its main file, then copied and damaged as a
disk, a crash or a stray write would: its header overwritten, the file cut in half, pages in the middle
overwritten with garbage. The commands are the real CLI in real processes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from stepline.adapters.base import Event

from ...conftest import free_port
from ...durability.helpers import STEPLINE, kill_group, start_server, wait_until
from .helpers import query

STEPS = {
    "go_step.py": """
config = {"type": "api", "name": "Go", "path": "/go/{n}", "method": "POST", "emits": ["work", "later"]}

async def handler(req, ctx):
    n = int(req.path_params["n"])
    key = f"go-{n}-" + "k" * 120  # long keys: the idempotency table spans several pages
    await ctx.emit({"topic": "work", "data": {"n": n, "pad": "w" * 400}, "idempotencyKey": key})
    await ctx.emit({"topic": "later", "data": {"n": n, "pad": "l" * 400}})
    await ctx.state.set("go", str(n), {"n": n, "pad": "s" * 200})
    return {"status": 202}
""",
    "work_step.py": """
config = {"type": "event", "name": "Work", "subscribes": ["work"], "infrastructure": {"queue": {"maxRetries": 0}}}

async def handler(input, ctx):
    if input["n"] % 3 == 0:
        raise RuntimeError("every third one fails: a dead letter")
    await ctx.state.set("done", str(input["n"]), True)
""",
    "later_step.py": """
config = {
    "type": "event", "name": "Later", "subscribes": ["later"], "infrastructure": {"queue": {"delaySeconds": 86400}}
}

async def handler(input, ctx):
    pass
""",
}
REQUESTS = 150

# `stepline start` with the check at open turned off, as for a file too large to check (CHECK_AT_OPEN_BYTES):
# damage is then met while running.
UNCHECKED = """
import sys
import stepline.adapters.sqlite.db as sqlite_db
sqlite_db.CHECK_AT_OPEN_BYTES = 0
from stepline.cli import main
sys.argv = ["stepline", *sys.argv[1:]]
main()
"""


def _project(root: Path) -> Path:
    (root / "steps").mkdir(parents=True)
    for name, source in STEPS.items():
        (root / "steps" / name).write_text(source.lstrip())
    return root


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database a real server has run, everything checkpointed into the main file (no -wal, no -shm)."""
    work = tmp_path_factory.mktemp("ran")
    root = _project(work / "project")
    db = root / ".stepline" / "stepline.db"
    port = free_port()
    server = start_server(root, port, work / "server.log")
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/__stepline/health", timeout=2).status_code == 200,
            30,
            "the server",
        )
        with httpx.Client(timeout=10) as client:
            for n in range(REQUESTS):
                assert client.post(f"http://127.0.0.1:{port}/go/{n}").status_code == 202
        wait_until(
            lambda: (
                query(db, "SELECT COUNT(*) FROM dead_letters")[0][0] == REQUESTS // 3
                and query(db, "SELECT COUNT(*) FROM state WHERE grp = 'done'")[0][0] == REQUESTS - REQUESTS // 3
            ),
            30,
            "the work to be done",
        )
    finally:
        kill_group(server, signal.SIGTERM)
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("deliveries", "state", "trace_parts")
        }
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    assert counts["deliveries"] == REQUESTS and counts["state"] > REQUESTS and counts["trace_parts"] > REQUESTS, counts
    return db


def _copy(ran: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A project holding a copy of the database that ran; its root and the copy."""
    root = _project(tmp_path / "project")
    db = root / ".stepline" / "stepline.db"
    db.parent.mkdir()
    shutil.copyfile(ran, db)
    return root, db


def _garbage(size: int) -> bytes:
    return bytes((i * 131 + 7) % 251 for i in range(size))


def overwrite_header(db: Path) -> None:
    with db.open("r+b") as f:
        f.write(_garbage(100))


def truncate_to_half(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def _page_size(db: Path) -> int:
    with db.open("rb") as f:
        size = int.from_bytes(f.read(18)[16:18], "big")  # the header's page size; 1 stands for 65536
    return 65536 if size == 1 else size


def btree_pages(db: Path, name: str) -> list[int]:
    """Every page of the b-tree of table or index `name`, read from the file itself, root first."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    data = db.read_bytes()
    page_size = _page_size(db)
    pages, todo = [], [root]
    while todo:
        number = todo.pop(0)
        pages.append(number)
        start = (number - 1) * page_size
        header = start + (100 if number == 1 else 0)
        kind = data[header]
        if kind in (0x02, 0x05):  # an interior page: its cells point at children, then a right-most child
            cells = int.from_bytes(data[header + 3 : header + 5], "big")
            pointers = [int.from_bytes(data[header + 12 + 2 * i : header + 14 + 2 * i], "big") for i in range(cells)]
            todo += [int.from_bytes(data[start + p : start + p + 4], "big") for p in pointers]
            todo.append(int.from_bytes(data[header + 8 : header + 12], "big"))
    return pages


def overwrite_pages(db: Path, *names: str) -> None:
    """Garbage over every page but the root of these tables and indexes: the middle of the file."""
    doomed = [page for name in names for page in btree_pages(db, name)[1:]]
    assert len(doomed) >= len(names), doomed  # each has pages under its root to damage
    page_size = _page_size(db)
    with db.open("r+b") as f:
        for page in doomed:
            f.seek((page - 1) * page_size)
            f.write(_garbage(page_size))


def overwrite_deliveries(db: Path) -> None:
    overwrite_pages(db, "deliveries", "deliveries_visible", "sqlite_autoindex_deliveries_1")


DAMAGES: dict[str, Callable[[Path], None]] = {
    "header": overwrite_header,
    "truncated": truncate_to_half,
    "middle": overwrite_deliveries,
}
COMMANDS = {
    "dev": ["dev", "--port", "{port}"],
    "start": ["start", "--port", "{port}"],
    "workers": ["start", "--port", "{port}", "--workers", "2"],  # the supervisor refuses it, not each worker
    "dlq": ["dlq", "list"],
    "traces": ["traces"],
    "state": ["state", "get", "go", "1"],
}


def _run(root: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    argv = [STEPLINE, *(a.replace("{port}", str(free_port())) for a in command), "--dir", str(root)]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        said = (exc.output or b"").decode() if isinstance(exc.output, bytes) else (exc.output or "")
        raise AssertionError(f"`{' '.join(argv[1:])}` still ran after 15 s, on a damaged file:\n{said}") from None


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_database_is_refused_in_one_line_naming_the_file_and_the_fix(
    ran: Path, tmp_path: Path, damage: str, command: str
) -> None:
    root, db = _copy(ran, tmp_path)
    DAMAGES[damage](db)
    done = _run(root, COMMANDS[command])
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, said
    assert "Traceback" not in said, said
    assert len(said.splitlines()) <= 2, said
    assert f"the database {db} is damaged" in said, said
    assert f"mv {db.name} {db.name}.damaged" in said and ".recover" in said, said


def _read_everything(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            conn.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        conn.close()


def test_sqlites_own_errors_for_damaged_files_are_store_corrupt_errors(ran: Path, tmp_path: Path) -> None:
    """The errors SQLite itself raises on the damaged files, SQLITE_NOTADB ("file is not a database") and
    SQLITE_CORRUPT ("database disk image is malformed"), become StoreCorruptError naming the file."""
    from stepline._errors import StoreCorruptError
    from stepline.adapters.sqlite.db import store_error

    seen = {}
    for damage in ("header", "truncated", "middle"):
        db = tmp_path / damage / "stepline.db"
        db.parent.mkdir()
        shutil.copyfile(ran, db)
        DAMAGES[damage](db)
        with pytest.raises(sqlite3.DatabaseError) as raised:
            _read_everything(db)
        seen[damage] = (raised.value.sqlite_errorname, str(raised.value))
        error = store_error(raised.value, db)
        assert isinstance(error, StoreCorruptError), (damage, seen[damage], error)
        assert str(db) in str(error) and error.fix
    assert seen["header"] == ("SQLITE_NOTADB", "file is not a database")
    assert seen["truncated"][1] == seen["middle"][1] == "database disk image is malformed"


def _serve_unchecked(root: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", UNCHECKED, "start", "--dir", str(root), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _health(port: int) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"http://127.0.0.1:{port}/__stepline/health", timeout=5)
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, {"text": answer.text}


def _damage_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "is damaged" in line]


def test_damage_met_while_running_answers_503_in_health_naming_the_file_and_is_logged_once(
    ran: Path, tmp_path: Path
) -> None:
    """Pages of the deliveries table and its indexes overwritten, in a file opened without the check: the
    delivery loop meets the damage at once."""
    root, db = _copy(ran, tmp_path)
    overwrite_deliveries(db)
    port, log = free_port(), tmp_path / "server.log"
    server = _serve_unchecked(root, port, log)
    try:
        wait_until(lambda: _health(port)[0] > 0, 30, "the server")
        wait_until(lambda: _health(port)[0] == 503, 10, "health to answer 503")
        body = _health(port)[1]
        problems = {p["component"]: p for p in body["problems"]}
        assert "database file" in problems, body
        assert f"the database {db} is damaged (database disk image is malformed)" in problems["database file"]["error"]
        assert f"mv {db.name} {db.name}.damaged" in problems["database file"]["fix"]
        before = _damage_lines(log)
        time.sleep(3)  # the loops keep meeting the damage: they do not log it again
        assert _damage_lines(log) == before
        assert _health(port)[0] == 503
    finally:
        kill_group(server, signal.SIGTERM)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert sum("database file is failing" in line for line in text.splitlines()) == 1, text
    components = [line.split(" is failing")[0].split()[-1] for line in _damage_lines(log) if " is failing" in line]
    assert len(components) == len(set(components)), text  # each loop said so once


def test_damage_met_by_a_request_shows_in_health_naming_the_file(ran: Path, tmp_path: Path) -> None:
    """The idempotency keys' table overwritten: no background loop reads it, so the server starts healthy;
    the first emit with a key meets the damage, and from then on health answers 503 and names the file."""
    root, db = _copy(ran, tmp_path)
    overwrite_pages(db, "idempotency_keys")
    port, log = free_port(), tmp_path / "server.log"
    server = _serve_unchecked(root, port, log)
    try:
        wait_until(lambda: _health(port)[0] == 200, 30, "the server")
        time.sleep(1.5)  # a heartbeat or two, which expire keys by their index and never meet the damage
        assert _health(port)[0] == 200
        with httpx.Client(timeout=10) as client:
            failed = [client.post(f"http://127.0.0.1:{port}/go/{REQUESTS + n}").status_code for n in range(5)]
        assert all(code >= 500 for code in failed), failed
        status, body = _health(port)
        assert status == 503, body
        problems = {p["component"]: p for p in body["problems"]}
        assert f"the database {db} is damaged (database disk image is malformed)" in problems["database file"]["error"]
    finally:
        kill_group(server, signal.SIGTERM)
    text = log.read_text()
    assert sum("database file is failing" in line for line in text.splitlines()) == 1, text
    assert "Traceback" not in text, text


async def test_operations_batched_with_one_that_meets_damage_still_commit(
    ran: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One operation that reads a damaged page fails its whole transaction at COMMIT: the others of its
    batch run again without it, and commit. The writer thread is held on purpose so that they share one."""
    from stepline.adapters.sqlite import SqliteEventQueue, SqliteStateStore
    from stepline.adapters.sqlite import db as _sqlite_db

    monkeypatch.setattr(_sqlite_db, "CHECK_AT_OPEN_BYTES", 0, raising=False)  # opened as a larger file is
    _, db = _copy(ran, tmp_path)
    overwrite_pages(db, "idempotency_keys")
    database = _sqlite_db.Database(db)
    queue, state = SqliteEventQueue(database), SqliteStateStore(database)
    holding, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        holding.set()
        release.wait(10)

    try:
        held = asyncio.ensure_future(database.write(hold))
        await asyncio.to_thread(holding.wait, 10)
        event = Event("e-damaged", "work", {"n": -1}, "trace", None, time.time())
        meets_damage = asyncio.ensure_future(queue.publish(event, {"Work": 0.0}, idempotency_key="a-new-key"))
        sets = [asyncio.ensure_future(state.set("beside", str(n), n)) for n in range(5)]
        await asyncio.sleep(0.1)  # all queued behind `hold`: the writer takes them as one batch
        release.set()
        await held
        outcomes = await asyncio.gather(meets_damage, *sets, return_exceptions=True)
    finally:
        release.set()
        await queue.close()
        await state.close()
    assert "damaged" in str(outcomes[0]) or "malformed" in str(outcomes[0]), outcomes
    assert outcomes[1:] == [None] * 5, outcomes
    assert query(db, "SELECT key FROM state WHERE grp = 'beside' ORDER BY key") == [(str(n),) for n in range(5)]
