"""Every runnable block of README.md and docs/, run as written (tests/docs/README.md says how)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .runner import REPO, Runner, Session, pages, sessions

ALL = [session for page in pages() for session in sessions(page)]

# The pages a newcomer looks for first: each exists, is linked from the README and runs something.
PAGES = [
    "getting-started.md",
    "configuration.md",
    "production.md",
    "agent-example.md",
    "testing.md",
    "recipes.md",
    "motia.md",
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("session", ALL, ids=[s.id for s in ALL])
def test_the_runnable_blocks_of_the_page_work(session: Session, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    wheel = request.getfixturevalue("wheel_dir") if "venv" in session.options else None
    Runner(tmp_path, wheel_dir=wheel).run(session)


@pytest.mark.parametrize("name", PAGES)
def test_each_newcomer_page_exists_is_linked_and_runs_something(name: str) -> None:
    page = REPO / "docs" / name
    assert page.exists(), f"docs/{name} is missing"
    assert f"(docs/{name}" in (REPO / "README.md").read_text(), f"README.md does not link docs/{name}"
    runnable = [b for s in sessions(page) for b in s.blocks if b.kind in ("run", "excerpt")]
    assert runnable, f"docs/{name} has no block marked runnable"


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    found: set[str] = set()
    in_fence = False
    for line in page.read_text().split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_every_link_between_pages_points_at_a_page_and_heading_that_exist() -> None:
    broken = []
    for page in pages():
        for target, anchor in re.findall(r"\]\(([^)#\s]*\.md|)(?:#([^)\s]*))?\)", page.read_text()):
            if not target and not anchor:
                continue
            linked = (page.parent / target) if target else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)} → {target}")
            elif anchor and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(REPO)} → {target}#{anchor}")
    assert broken == []
