"""docs/streams.md's examples, run as written: the stream file and the step that sets it, watched by the
Python client as the page shows it; and the agent example, its tokens written to an item as they come."""

from __future__ import annotations

import re
from pathlib import Path

from stepline.client import StreamClient
from stepline.testing import Answer, ScriptedLLM, serve

from .conftest import ProjectFactory

DOC = Path(__file__).resolve().parents[1] / "docs" / "streams.md"


def _block(marker: str) -> str:
    [block] = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if marker in b]
    return block


async def test_the_first_example_sets_items_a_client_follows(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/progress_stream.py": _block("# steps/progress_stream.py"),
            "steps/import_step.py": _block("# steps/import_step.py"),
        }
    )
    async with serve(root, store="memory://") as app, StreamClient(app.url) as client:
        job = await client.item("progress", "imports", "job-7")
        assert job.state is None
        await app.emit("import.requested", {"id": "job-7"})
        await app.settle()
        seen = []
        while not seen or seen[-1] != 100:
            seen.append((await job.next(5)).data["pct"])
        assert seen == sorted(seen) and job.state == {"pct": 100, "note": "", "id": "job-7"}


async def test_the_agent_example_streams_its_reply_into_an_item(make_project: ProjectFactory) -> None:
    handler = _block("to=answer").strip()
    assert handler.startswith("async def handler")
    step = 'config = {"type": "event", "name": "Ask", "subscribes": ["ask"]}\n\n' + handler + "\n"
    stream = 'config = {"name": "answers", "schema": {"type": "object"}}\n'
    with ScriptedLLM() as llm:
        llm.add(Answer(text="forty two", pace=0.01))
        root = make_project({"steps/answers_stream.py": stream, "steps/ask_step.py": step})
        async with serve(root, store="memory://", llm=llm.settings()) as app, StreamClient(app.url) as client:
            chat = await client.item("answers", "chats", "c1")
            await app.emit("ask", {"chatId": "c1", "q": "the answer?"})
            await app.settle()
            while chat.state is None or not chat.state["done"]:
                await chat.next(5)
            assert chat.state == {"question": "the answer?", "text": "forty two", "done": True, "id": "c1"}
