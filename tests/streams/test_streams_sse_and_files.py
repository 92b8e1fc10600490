"""Streams over SSE (a real HTTP client reading the event stream), the JavaScript client's file, and stream
files with mistakes in them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest

from stepline import ProjectLoadError, Stepline, load_project
from stepline.testing import serve

from ..conftest import ProjectFactory
from .test_streams_ws import PROJECT


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each SSE event as {"id"?, "event", "data"} (comments and the retry line skipped)."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


async def next_event(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(5):
        return await anext(events)


async def test_sse_sends_the_snapshot_then_changes_and_resumes_from_last_event_id(
    make_project: ProjectFactory, store: str
) -> None:
    root = make_project(PROJECT)
    async with serve(root, store=store) as app:
        hub = app.stepline.streams
        assert hub is not None
        await hub.set("progress", "g", "a", {"pct": 1})
        async with app.client.stream("GET", "/__stepline/streams/progress/g") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            sync = await next_event(events)
            assert (sync["id"], sync["event"]) == ("1", "sync")
            assert sync["data"]["event"]["data"] == [{"pct": 1, "note": "", "id": "a"}]
            await hub.set("progress", "g", "b", {"pct": 2})
            created = await next_event(events)
            assert (created["id"], created["event"]) == ("2", "create") and created["data"]["id"] == "b"
            await app.stepline.emit("notify", {"group": "g", "text": "hi"})
            note = await next_event(events)
            assert note["event"] == "event" and "id" not in note  # an event moves no number
            assert note["data"]["event"]["event"] == {"type": "note", "data": "hi"}
        for n in range(3):  # while no one watches
            await hub.set("progress", "g", "a", {"pct": 10 + n})
        await hub.delete("progress", "g", "b")
        # An EventSource reconnects with the last id it saw: it gets what it missed, not a snapshot.
        async with app.client.stream(
            "GET", "/__stepline/streams/progress/g", headers={"last-event-id": "2"}
        ) as response:
            events = sse_events(response)
            missed = [await next_event(events) for _ in range(2)]
            assert [(e["id"], e["event"]) for e in missed] == [("5", "update"), ("6", "delete")]  # updates coalesced
            assert missed[0]["data"]["event"]["data"]["pct"] == 12
        async with app.client.stream("GET", "/__stepline/streams/progress/g/a") as response:  # one item
            sync = await next_event(sse_events(response))
            assert sync["data"]["id"] == "a" and sync["data"]["event"]["data"]["pct"] == 12


async def test_sse_refusals_are_4xx_with_a_code(make_project: ProjectFactory, caplog: pytest.LogCaptureFixture) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app:
        forged = await app.client.get("/__stepline/streams/private/alice", headers={"authorization": "Bearer forged"})
        assert forged.status_code == 401
        assert forged.json() == {"error": "the token is not one of ours", "code": "STREAM_UNAUTHORIZED"}
        denied = await app.client.get("/__stepline/streams/private/alice?authToken=user-bob")
        assert denied.status_code == 403 and denied.json()["code"] == "STREAM_ACCESS_DENIED"
        missing = await app.client.get("/__stepline/streams/nosuch/g")
        assert missing.status_code == 404 and missing.json()["code"] == "STREAM_NOT_FOUND"
        # A bug in the hook itself: the client is told only that it failed; the log names the error.
        with caplog.at_level(logging.ERROR, logger="stepline.streams"):
            broken = await app.client.get("/__stepline/streams/private/alice?authToken=crash")
        assert broken.status_code == 401 and broken.json()["error"] == "authentication failed"
        assert "the streams authenticate hook raised ZeroDivisionError" in caplog.text
        async with app.client.stream(
            "GET", "/__stepline/streams/private/alice", headers={"authorization": "Bearer user-alice"}
        ) as allowed:
            assert allowed.status_code == 200
            assert (await next_event(sse_events(allowed)))["event"] == "sync"


async def test_the_javascript_client_is_served_as_a_module(make_project: ProjectFactory) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app:
        response = await app.client.get("/__stepline/streams/client.js")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
        assert "export class StreamClient" in response.text


def test_stream_files_with_mistakes_name_the_file_the_field_and_the_fix(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/noname_stream.py": 'config = {"schema": {"type": "object"}}',
            "steps/noschema_stream.py": 'config = {"name": "a"}',
            "steps/badschema_stream.py": 'config = {"name": "b", "schema": {"type": "nope"}}',
            "steps/custom_stream.py": 'config = {"name": "c", "schema": {"type": "object"}, '
            '"baseConfig": {"storageType": "custom"}}',
            "steps/check_stream.py": 'config = {"name": "d", "schema": {"type": "object"}}\ncan_access = 3',
            "steps/dup_stream.py": 'config = {"name": "e", "schema": {"type": "object"}}',
            "steps/dup2_stream.py": 'config = {"name": "e", "schema": {"type": "object"}}',
            "steps/syntax_stream.py": "config = {",
        }
    )
    with pytest.raises(ProjectLoadError) as failed:
        load_project(root)
    found = {(p.file, p.field): p for p in failed.value.problems}
    assert "a stream name is letters" in found["steps/noname_stream.py", "name"].message
    assert "no schema" in found["steps/noschema_stream.py", "schema"].message
    assert "pydantic model" in found["steps/noschema_stream.py", "schema"].fix
    assert "invalid JSON Schema" in found["steps/badschema_stream.py", "schema"].message
    assert "custom" in found["steps/custom_stream.py", "baseConfig"].message
    assert "not a function" in found["steps/check_stream.py", "can_access"].message
    assert "also defined in steps/dup2_stream.py" in found["steps/dup_stream.py", "name"].message
    assert "syntax error" in found["steps/syntax_stream.py", ""].message
    assert found["steps/noschema_stream.py", "schema"].line == 1


def test_a_motia_stream_file_loads_as_it_is(make_project: ProjectFactory) -> None:
    root = make_project(
        {
            "steps/openai.stream.py": """
                from pydantic import BaseModel

                class Message(BaseModel):
                    message: str

                def allow(subscription, auth_context):
                    return True

                config = {
                    "name": "openai",
                    "schema": Message.model_json_schema(),
                    "baseConfig": {"storageType": "default"},
                    "canAccess": allow,
                }
            """,
        }
    )
    project = load_project(root)
    stream = project.streams["openai"]
    assert stream.can_access is not None and stream.schema is not None
    assert stream.validate({"message": "hi"}, "an item") == {"message": "hi"}


async def test_the_workbench_api_lists_streams_groups_and_items(make_project: ProjectFactory) -> None:
    root = make_project(PROJECT)
    async with serve(root, store="memory://") as app:
        hub = app.stepline.streams
        assert hub is not None
        await hub.set("progress", "g", "a", {"pct": 1})
        await hub.set("progress", "g", "b", {"pct": 2})
        await hub.delete("progress", "g", "b")
        async with app.client.stream("GET", "/__stepline/streams/progress/g") as watching:
            await next_event(sse_events(watching))
            listed = (await app.client.get("/__stepline/api/streams")).json()
        by_name = {s["name"]: s for s in listed}
        assert set(by_name) == {"progress", "private"}
        progress = by_name["progress"]
        assert progress["file"] == "steps/progress_stream.py" and progress["access"] == "open"
        assert progress["schema"]["properties"]["pct"]["type"] == "integer"
        assert progress["groups"] == [{"group": "g", "items": 1, "seq": 3, "watchers": 1}]
        assert by_name["private"]["access"] == "checked"
        group = (await app.client.get("/__stepline/api/streams/progress/g")).json()
        assert group == {"stream": "progress", "group": "g", "seq": 3, "items": [{"pct": 1, "note": "", "id": "a"}]}
        assert (await app.client.get("/__stepline/api/streams/nosuch/g")).status_code == 404


def test_an_authenticate_hook_that_cannot_be_imported_stops_the_start(make_project: ProjectFactory) -> None:
    root = make_project({**PROJECT, "stepline.toml": '[streams]\nauthenticate = "auht:authenticate"\n'})
    with pytest.raises(ProjectLoadError) as failed:
        Stepline(root, store="memory://")
    [problem] = failed.value.problems
    assert (problem.file, problem.field) == ("stepline.toml", "streams.authenticate")
    assert "No module named 'auht'" in problem.message and '"auth:authenticate"' in problem.fix
    (root / "stepline.toml").write_text('[streams]\nauthenticate = "auth:authenticate"\n')
    app = Stepline(root, store="memory://")
    (root / "stepline.toml").write_text('[streams]\nauthenticate = "auth:nothing"\n')
    [again] = app.reload()  # a reload keeps the last good hook running, and says why
    assert again.field == "streams.authenticate" and "not a function" in again.message
    assert app._authenticate() is not None and app._authenticate().__name__ == "authenticate"  # type: ignore[union-attr]
