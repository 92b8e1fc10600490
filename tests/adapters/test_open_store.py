"""Stores chosen by URL: `open_store`, `Stepline(store=)`, `--store` and `$STEPLINE_STORE`, and the old
`engine=`/`database=`/`synchronous=` and `--engine/--db/--sync` that still work, with a warning."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stepline import Stepline, StoreURLError
from stepline.adapters import STORES, open_store, parse_store_url
from stepline.adapters import _Kind as StoreKindEntry
from stepline.adapters.base import StoreOptions
from stepline.adapters.memory import MemoryEventQueue
from stepline.adapters.sqlite import SqliteEventQueue
from stepline.cli import app as cli

from ..conftest import ProjectFactory

HELLO = {
    "steps/hello_step.py": """
        config = {"type": "event", "name": "Hello", "subscribes": ["hello"]}
        async def handler(input, ctx):
            await ctx.state.set("said", "hello", input)
    """,
}
runner = CliRunner()


async def test_memory_and_sqlite_by_url(tmp_path: Path) -> None:
    memory = open_store("memory://", StoreOptions(root=tmp_path))
    assert isinstance(memory.queue, MemoryEventQueue) and memory.per_process and memory.url == "memory://"
    await memory.close()
    relative = open_store("sqlite:///data/app.db", StoreOptions(root=tmp_path))
    assert isinstance(relative.queue, SqliteEventQueue) and not relative.per_process
    await relative.close()
    assert (tmp_path / "data" / "app.db").exists()  # three slashes: relative to the project root
    absolute = tmp_path / "elsewhere" / "abs.db"
    opened = open_store(f"sqlite:///{absolute}?sync=full&busy_timeout=2", StoreOptions(root=tmp_path / "x"))
    await opened.close()
    assert absolute.exists()  # four slashes (the path's own first one): absolute
    default = open_store("sqlite://", StoreOptions(root=tmp_path))
    await default.close()
    assert (tmp_path / ".stepline" / "stepline.db").exists()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://db/app", "unknown store 'postgres'"),
        ("stepline.db", "is not a store URL"),
        ("sqlite://data/app.db", "has a host (data)"),
        ("sqlite:///app.db?synchronous=full", "does not take (synchronous)"),
        ("sqlite:///app.db?sync=sometimes", "sync=sometimes"),
        ("sqlite:///app.db?busy_timeout=soon", "busy_timeout=soon"),
        ("sqlite:///app.db?sync=full&sync=normal", "sets sync twice"),
        ("memory://somewhere", "a memory store lives in the process"),
        ("memory://?size=10", "does not take (size)"),
    ],
)
def test_a_bad_url_says_what_is_wrong_and_the_forms_that_work(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(StoreURLError) as caught:
        open_store(url, StoreOptions(root=tmp_path))
    assert says in str(caught.value)
    assert caught.value.fix  # and what to write instead
    assert not list(tmp_path.iterdir())  # nothing was created


def test_the_fix_for_a_host_in_a_sqlite_url_shows_both_paths(tmp_path: Path) -> None:
    with pytest.raises(StoreURLError) as caught:
        open_store("sqlite://data/app.db", StoreOptions(root=tmp_path))
    assert "sqlite:///data/app.db" in caught.value.fix and "sqlite:////data/app.db" in caught.value.fix


def test_a_password_in_a_url_is_never_shown() -> None:
    url = parse_store_url("redis://user:s3cret@cache:6379/0")
    assert url.shown() == "redis://user:***@cache:6379/0"
    with pytest.raises(StoreURLError) as caught:
        open_store("redis://user:s3cret@cache:6379/0?pool=3")  # an option redis:// does not take
    assert "s3cret" not in str(caught.value) and "redis://user:***@cache:6379/0" in str(caught.value)
    with pytest.raises(StoreURLError) as caught:
        parse_store_url("redis://user:s3cret@cache:6379/0?db=1&db=2")
    assert "sets db twice" in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_store_whose_driver_is_missing_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_store.py").write_text("import a_driver_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(STORES, "fake", StoreKindEntry("fake_store", "fake", "fake://host"))
    with pytest.raises(StoreURLError) as caught:
        open_store("fake://host")
    assert "needs a_driver_that_is_not_installed" in str(caught.value)
    assert caught.value.fix == "pip install 'stepline[fake]'"
    sys.modules.pop("fake_store", None)


async def test_stepline_takes_the_store_from_its_argument_then_the_environment(
    make_project: ProjectFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(HELLO)
    monkeypatch.setenv("STEPLINE_STORE", "sqlite:///from-env.db")
    from_env = Stepline(root)
    await from_env.adapters.close()
    assert (root / "from-env.db").exists() and not (root / ".stepline").exists()
    explicit = Stepline(root, store="memory://")
    assert explicit.adapters.per_process
    await explicit.adapters.close()
    monkeypatch.setenv("STEPLINE_STORE", "nonsense")
    with pytest.raises(StoreURLError):
        Stepline(root)


async def test_the_old_arguments_still_work_with_a_deprecation_warning(
    make_project: ProjectFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(HELLO)
    with pytest.warns(DeprecationWarning, match=r"store='memory://'"):
        memory = Stepline(root, engine="memory")
    assert memory.adapters.per_process
    monkeypatch.chdir(tmp_path)
    with pytest.warns(DeprecationWarning, match="sync=full"):
        old = Stepline(root, database="old.db", synchronous="FULL")  # relative to the working directory
    await old.adapters.close()
    assert (tmp_path / "old.db").exists()
    conn = sqlite3.connect(tmp_path / "old.db")
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'deliveries'").fetchone() == (1,)
    conn.close()
    with pytest.raises(TypeError, match="store= alone"):
        Stepline(root, store="memory://", engine="memory")


def test_cli_runtime_commands_read_the_store_the_server_ran_on(
    make_project: ProjectFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(HELLO)
    monkeypatch.setenv("STEPLINE_STORE", "")  # so that what the .env below sets is undone after the test
    monkeypatch.delenv("STEPLINE_STORE")
    store = f"sqlite:///{tmp_path}/shared/app.db"
    ran = runner.invoke(cli, ["emit", "--local", "--dir", str(root), "--topic", "hello", "--data", '"hi"'])
    assert ran.exit_code == 0, ran.output
    assert runner.invoke(cli, ["state", "get", "said", "hello", "--dir", str(root)]).output.strip() == '"hi"'
    # Another store, named by --store, then by $STEPLINE_STORE (as a project's .env would set it).
    set_there = runner.invoke(cli, ["state", "set", "said", "hello", '"there"', "--store", store, "--dir", str(root)])
    assert "no database at" in set_there.output  # the read commands never create an empty store
    Stepline(root, store=store)  # the server's first run creates it
    assert runner.invoke(cli, ["state", "set", "said", "hello", '"there"', "--store", store]).exit_code == 0
    (root / ".env").write_text(f"STEPLINE_STORE={store}\n")
    assert runner.invoke(cli, ["state", "get", "said", "hello", "--dir", str(root)]).output.strip() == '"there"'
    memory = runner.invoke(cli, ["dlq", "list", "--store", "memory://"])
    assert memory.exit_code == 1 and "lives inside the process that runs it" in memory.output


def test_cli_old_store_options_still_work_with_a_warning(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(HELLO)
    Stepline(root, store=f"sqlite:///{tmp_path}/old.db")
    result = runner.invoke(cli, ["dlq", "list", "--dir", str(root), "--db", str(tmp_path / "old.db")])
    assert result.exit_code == 0, result.output
    assert f"deprecated: use --store sqlite:///{tmp_path}/old.db" in result.output
    both = runner.invoke(cli, ["dlq", "list", "--store", "memory://", "--db", "x.db"])
    assert both.exit_code == 2 and "give --store alone" in both.output


def test_workers_refuse_a_store_they_cannot_share(make_project: ProjectFactory) -> None:
    root = make_project(HELLO)
    result = runner.invoke(cli, ["start", "--dir", str(root), "--workers", "2", "--store", "memory://"])
    assert result.exit_code == 2 and "needs a store the workers share" in result.output
