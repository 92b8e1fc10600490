"""The docs runner fails a broken example: each page here is broken in one way, and the runner must say
where and why. The working page beside them shows the same blocks pass when nothing is broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from .runner import DocError, Runner, sessions

STEP = """\
<!-- run -->
```python
# steps/hello_step.py: an API step
config = {"type": "api", "name": "Hello", "path": "/hello/{name}", "method": "GET"}

async def handler(req, ctx):
    return {"message": f"Hello, {req.path_params['name']}!"}
```
"""

SERVE = """\
<!-- run -->
```bash
mkdir -p notes && cd notes && echo kept > note.txt
cd ..
stepline dev --port 3000     # serves on a port of the test's
```

<!-- run -->
```bash
cat notes/note.txt
curl -fsS localhost:3000/hello/ana
```

<!-- output -->
```
kept
{"message":"Hello, ana!"}
```
"""


def _run(tmp_path: Path, text: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(text)
    for session in sessions(page):
        Runner(tmp_path / "work").run(session)


def test_a_working_page_passes(tmp_path: Path) -> None:
    _run(tmp_path, "# A page\n\n" + STEP + "\n" + SERVE)


def test_a_broken_step_fails_the_page_at_the_block_that_calls_it(tmp_path: Path) -> None:
    broken = STEP.replace("req.path_params['name']", "req.path_params['nom']")  # a KeyError: a 500
    with pytest.raises(DocError, match=r"page.md:\d+: the block exited 22"):
        _run(tmp_path, broken + SERVE)


def test_a_step_that_cannot_load_fails_where_the_server_starts(tmp_path: Path) -> None:
    broken = STEP.replace('"method": "GET"', '"method": "FETCH"')
    with pytest.raises(DocError, match=r"page.md:\d+: `stepline dev --port \d+` exited 1[\s\S]*method"):
        _run(tmp_path, broken + SERVE)


def test_output_that_differs_from_the_page_fails(tmp_path: Path) -> None:
    with pytest.raises(DocError, match=r"has no line '\{\"message\":\"Hi, ana!\"\}'"):
        _run(tmp_path, STEP + SERVE.replace('"Hello, ana!"', '"Hi, ana!"'))


def test_a_python_block_that_raises_fails(tmp_path: Path) -> None:
    page = '<!-- run -->\n```python\nimport json\nassert json.loads("[1]") == [2], "the page is wrong"\n```\n'
    with pytest.raises(DocError, match=r"page.md:2: the block exited 1[\s\S]*the page is wrong"):
        _run(tmp_path, page)


def test_a_block_the_page_says_fails_must_fail(tmp_path: Path) -> None:
    _run(tmp_path, "<!-- run fails -->\n```bash\nfalse\n```\n")
    with pytest.raises(DocError, match="succeeded, but the page says it fails"):
        _run(tmp_path, "<!-- run fails -->\n```bash\ntrue\n```\n")


def test_an_excerpt_must_match_the_file_it_quotes(tmp_path: Path) -> None:
    good = (
        "<!-- excerpt -->\n```python\n# tests/docs/runner.py\n"
        "class DocError(AssertionError):\n...\ndef pages() -> Iterator[Path]:\n```\n"
    )
    _run(tmp_path, good)
    with pytest.raises(DocError, match=r"line 2 of the excerpt is not in tests/docs/runner.py"):
        _run(tmp_path, good.replace("class DocError(AssertionError)", "class DocError(Exception)"))
    with pytest.raises(DocError, match="which does not exist"):
        _run(tmp_path, good.replace("tests/docs/runner.py", "tests/docs/gone.py"))


def test_a_marker_applies_only_to_the_fence_right_after_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- run -->\nsome prose\n```bash\nfalse\n```\n")
    assert sessions(page) == []
