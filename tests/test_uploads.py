"""File uploads over real HTTP: exact bytes for any body, multipart/form-data parsed into fields and files,
and the limits and refusals (413 past max_body, 400 for a malformed form, 415 where a schema wants JSON)."""

from __future__ import annotations

import hashlib

import pytest

from stepline import UploadedFile
from stepline.http.multipart import MAX_PARTS
from stepline.testing import serve

from .conftest import ProjectFactory

UPLOADS = {
    "steps/echo_step.py": """
        from starlette.responses import Response
        config = {"type": "api", "name": "Echo", "path": "/echo", "method": "POST"}
        async def handler(req, ctx):  # the bytes back as they came, whatever they are
            return Response(req.body_bytes, media_type="application/octet-stream",
                            headers={"x-raw-length": str(len(req.raw_body))})
    """,
    "steps/form_step.py": """
        import hashlib
        from stepline import UploadedFile

        config = {"type": "api", "name": "Form", "path": "/form", "method": "POST"}

        def describe(value):
            if isinstance(value, list):
                return [describe(v) for v in value]
            if isinstance(value, UploadedFile):
                return {"filename": value.filename, "type": value.content_type, "size": value.size,
                        "sha256": hashlib.sha256(value.content).hexdigest(), "headers": value.headers}
            return value

        async def handler(req, ctx):
            return {"form": {k: describe(v) for k, v in req.body.items()}, "length": len(req.body_bytes)}
    """,
    "steps/file_step.py": """
        from starlette.responses import Response
        config = {"type": "api", "name": "File", "path": "/file/{field}", "method": "POST"}
        async def handler(req, ctx):  # one file part's content back, byte for byte
            part = req.body[req.path_params["field"]]
            return Response(part.content, media_type=part.content_type)
    """,
    "steps/typed_step.py": """
        from pydantic import BaseModel
        class Note(BaseModel):
            text: str
        config = {"type": "api", "name": "Typed", "path": "/typed", "method": "POST", "bodySchema": Note}
        async def handler(req, ctx):
            return req.body
    """,
}

EVERY_BYTE = bytes(range(256)) * 64  # 16 KiB holding every byte value, invalid UTF-8 included


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _form(*parts: bytes, boundary: bytes = b"XyZ") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary + b"--\r\n"


async def test_a_binary_body_reaches_the_handler_byte_exact(make_project: ProjectFactory) -> None:
    async with serve(make_project(UPLOADS)) as app:
        for content_type in ("application/octet-stream", "image/png", "text/plain", ""):
            headers = {"content-type": content_type} if content_type else {}
            r = await app.client.post("/echo", content=EVERY_BYTE, headers=headers)
            assert r.status_code == 200, content_type
            assert r.content == EVERY_BYTE, content_type
            # raw_body stays what it was (the body as text, undecodable bytes replaced), for Motia's handlers
            assert int(r.headers["x-raw-length"]) == len(EVERY_BYTE.decode("utf-8", "replace"))


async def test_multipart_fields_and_files_are_parsed(make_project: ProjectFactory) -> None:
    picture = EVERY_BYTE[::-1]
    async with serve(make_project(UPLOADS)) as app:
        r = await app.client.post(
            "/form",
            data={"title": "Holidays ☀", "tag": ["sea", "sun"]},
            files=[
                ("photo", ("beach é.png", picture, "image/png")),
                ("docs", ("a.txt", b"first", "text/plain")),
                ("docs", ("b.bin", EVERY_BYTE, "application/octet-stream")),
            ],
        )
        assert r.status_code == 200, r.text
        form = r.json()["form"]
        assert form["title"] == "Holidays ☀"
        assert form["tag"] == ["sea", "sun"]  # a name sent twice: a list, in the order sent
        photo = form["photo"]
        assert (photo["filename"], photo["type"], photo["size"]) == ("beach é.png", "image/png", len(picture))
        assert photo["sha256"] == _sha(picture)
        assert 'filename="beach é.png"' in photo["headers"]["content-disposition"]
        assert [d["filename"] for d in form["docs"]] == ["a.txt", "b.bin"]
        assert form["docs"][1]["sha256"] == _sha(EVERY_BYTE)

        back = await app.client.post("/file/photo", files={"photo": ("p.png", picture, "image/png")})
        assert back.content == picture
        assert back.headers["content-type"] == "image/png"


async def test_file_parts_without_a_type_or_a_chosen_file(make_project: ProjectFactory) -> None:
    body = _form(
        b'Content-Disposition: form-data; name="upload"; filename="data.bin"\r\n\r\n\x00\x01',
        b'Content-Disposition: form-data; name="empty"; filename=""\r\nContent-Type: application/octet-stream\r\n\r\n',
        b'Content-Disposition: form-data; name="latin"\r\nContent-Type: text/plain; charset=latin-1\r\n\r\ncaf\xe9',
    )
    async with serve(make_project(UPLOADS)) as app:
        r = await app.client.post("/form", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert r.status_code == 200, r.text
        form = r.json()["form"]
        assert form["upload"]["type"] == "application/octet-stream"  # RFC 7578's default for a file
        assert form["upload"]["size"] == 2
        assert form["empty"]["filename"] == "" and form["empty"]["size"] == 0  # an input left empty: still a file
        assert form["latin"] == "café"  # a text part's own charset
        assert r.json()["length"] == len(body)  # body_bytes is the whole body, as it came


async def test_a_form_past_the_body_limit_is_413(make_project: ProjectFactory) -> None:
    async with serve(make_project(UPLOADS), max_body=10_000) as app:
        r = await app.client.post("/form", files={"f": ("big.bin", b"x" * 20_000)})
        assert r.status_code == 413
        assert "larger than 10,000 bytes" in r.json()["error"]
        small = await app.client.post("/form", files={"f": ("small.bin", b"x" * 1_000)})
        assert small.status_code == 200


async def test_a_large_form_is_parsed_off_the_event_loop_all_the_same(make_project: ProjectFactory) -> None:
    big = EVERY_BYTE * 16  # 256 KiB: past the size parsed on a thread
    async with serve(make_project(UPLOADS)) as app:
        r = await app.client.post("/form", files={"f": ("big.bin", big)}, data={"note": "large"})
        assert r.status_code == 200
        assert r.json()["form"]["f"]["sha256"] == _sha(big)
        assert r.json()["form"]["note"] == "large"


MULTIPART = "multipart/form-data; boundary=XyZ"
MALFORMED = [
    pytest.param("multipart/form-data", _form(b'Content-Disposition: form-data; name="a"\r\n\r\n1'), "no boundary",
                 id="no-boundary"),
    pytest.param(MULTIPART, b"this is not a form", "does not parse as parts separated by --XyZ", id="garbage"),
    pytest.param(MULTIPART, _form(b'Content-Disposition: form-data; name="a"\r\n\r\n1')[:-9],
                 "ends before its closing boundary", id="cut-short"),
    pytest.param(MULTIPART, _form(b"Content-Type: text/plain\r\n\r\n1"), "part 1 has no Content-Disposition",
                 id="no-disposition"),
    pytest.param(MULTIPART, _form(b'Content-Disposition: attachment; filename="a"\r\n\r\n1'),
                 "part 1 has Content-Disposition: attachment", id="not-form-data"),
    pytest.param(MULTIPART, _form(b"Content-Disposition: form-data\r\n\r\n1"), "each part needs", id="no-name"),
    pytest.param(MULTIPART, _form(b"no colon in this header\r\n\r\n1"), "does not parse", id="bad-header"),
    pytest.param(MULTIPART, _form(*[b'Content-Disposition: form-data; name="a"\r\n\r\n1'] * (MAX_PARTS + 1)),
                 "more than 1,000 parts", id="too-many-parts"),
]  # fmt: skip


@pytest.mark.parametrize(("content_type", "body", "reason"), MALFORMED)
async def test_a_malformed_form_is_400_with_the_reason(
    make_project: ProjectFactory, content_type: str, body: bytes, reason: str
) -> None:
    async with serve(make_project(UPLOADS)) as app:
        r = await app.client.post("/form", content=body, headers={"content-type": content_type})
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("the multipart/form-data body is malformed: ")
        assert reason in r.json()["error"]
        assert len(r.json()["traceId"]) == 36


async def test_a_body_schema_still_takes_json_only(make_project: ProjectFactory) -> None:
    async with serve(make_project(UPLOADS)) as app:
        r = await app.client.post("/typed", data={"text": "hi"}, files={"f": ("a.txt", b"a")})
        assert r.status_code == 415
        assert "must be JSON" in r.json()["error"]
        ok = await app.client.post("/typed", json={"text": "hi"})
        assert ok.json() == {"text": "hi"}


def test_an_uploaded_file_shows_its_size_not_its_bytes() -> None:
    part = UploadedFile("a.png", "image/png", b"\x89PNG" * 1000)
    assert part.size == 4000
    assert repr(part) == "UploadedFile(filename='a.png', content_type='image/png', size=4000)"
