"""`multipart/form-data` bodies: fields as text, files as `UploadedFile`, every malformation a 400.

The body is parsed once it is whole in memory: `read_body` has held it to the app's size and time limits
by then, so what a form can cost is bounded before the first part is looked at. Parsing is plain Python
on bytes, so the HTTP app runs it off the event loop for a large body, as it does for large JSON.
"""

from __future__ import annotations

import codecs
import logging
from typing import TYPE_CHECKING, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from stepline._errors import HttpError
from stepline.steps.request import UploadedFile

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# As Starlette's form parser allows (1,000 fields and 1,000 files): past it a form is not a form but a
# way to make the server build a million small objects out of one allowed body.
MAX_PARTS = 1000
_FILE_TYPE = "application/octet-stream"  # RFC 7578 4.4: a file part's type when the client names none

# python-multipart logs every parse error as a warning; the error is the 400's reason already, and a
# client sending garbage on purpose should not get to write to the server's log for each request.
_QUIET = logging.getLogger("stepline.http.multipart.parser")
_QUIET.setLevel(logging.CRITICAL + 1)
_QUIET.propagate = False


class _Part:
    __slots__ = ("data", "headers")

    def __init__(self) -> None:
        self.headers: list[tuple[str, bytes]] = []
        self.data = bytearray()


def is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Any]:
    """The form's parts by name: a field's text, an `UploadedFile` for a part with a filename, and a list
    of them, in the order sent, for a name sent more than once (as a url-encoded form gives). Raises
    HttpError 400 with the reason for a body that is not the multipart its Content-Type says."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise _malformed("its Content-Type has no boundary (multipart/form-data; boundary=...)")
    charset = _charset(options.get(b"charset"))
    parts: list[_Part] = []
    header: list[bytes] = [b"", b""]  # the name and value of the header being read, in pieces

    def begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise _malformed(f"it has more than {MAX_PARTS:,} parts")
        parts.append(_Part())

    def data(chunk: bytes, start: int, end: int) -> None:
        parts[-1].data += chunk[start:end]

    def header_field(chunk: bytes, start: int, end: int) -> None:
        header[0] += chunk[start:end]

    def header_value(chunk: bytes, start: int, end: int) -> None:
        header[1] += chunk[start:end]

    def header_end() -> None:
        parts[-1].headers.append((header[0].decode("latin-1").strip().lower(), header[1].strip()))
        header[0] = header[1] = b""

    callbacks: MultipartCallbacks = {
        "on_part_begin": begin,
        "on_part_data": data,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.logger = _QUIET
        parser.write(raw)
        parser.finalize()
    except FormParserError as exc:  # python-multipart's own errors are the reason; its others are bugs
        shown = boundary.decode("latin-1")
        raise _malformed(f"it does not parse as parts separated by --{shown} ({exc})") from None
    # The parser accepts a body that stops in the middle (finalize() does not check yet): a form whose
    # closing boundary never came is cut short, and its last part would be half a file.
    if parser.state != MultipartState.END:
        raise _malformed("it ends before its closing boundary (--" + boundary.decode("latin-1") + "--)")
    form: dict[str, Any] = {}
    for index, part in enumerate(parts, 1):
        name, value = _field(part, index, charset)
        if name not in form:
            form[name] = value
        elif isinstance(form[name], list):
            form[name].append(value)
        else:
            form[name] = [form[name], value]
    return form


def _field(part: _Part, index: int, charset: str) -> tuple[str, str | UploadedFile]:
    headers = {name: value.decode(charset, "replace") for name, value in part.headers}
    disposition, options = parse_options_header(dict(part.headers).get("content-disposition"))
    if disposition != b"form-data" or b"name" not in options:
        got = f"Content-Disposition: {headers['content-disposition']}" if disposition else "no Content-Disposition"
        raise _malformed(f'part {index} has {got}; each part needs Content-Disposition: form-data; name="..."')
    name = options[b"name"].decode(charset, "replace")
    if b"filename" in options:  # a file input sends filename="" when nothing was chosen: still a file
        return name, UploadedFile(
            filename=options[b"filename"].decode(charset, "replace"),
            content_type=headers.get("content-type") or _FILE_TYPE,
            content=bytes(part.data),
            headers=headers,
        )
    own = _charset(parse_options_header(headers.get("content-type"))[1].get(b"charset"), charset)
    return name, part.data.decode(own, "replace")  # as a url-encoded form's text: never a 400 over one byte


def _charset(name: bytes | None, default: str = "utf-8") -> str:
    if not name:
        return default
    try:
        found = codecs.lookup(name.decode("latin-1")).name
        b"".decode(found)  # rot13 and its kind are codecs too, but not text encodings: decode() refuses them
    except LookupError:
        return default
    return found


def _malformed(reason: str) -> HttpError:
    return HttpError(400, f"the multipart/form-data body is malformed: {reason}")
