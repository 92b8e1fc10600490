"""Hostile input gets a clear 4xx, never a 5xx, and valid input reaches the handler unchanged: fuzzed over real HTTP.

Two kinds of fuzzing, both deterministic (a fixed seed, or hypothesis's derandomize) so the suite never flakes:

- schemathesis runs against each example app's own /openapi.json, served for real, with the checks
  `not_a_server_error` and `negative_data_rejection` (a request that violates the documented schema must get
  a 4xx, not be accepted);
- a hypothesis property test posts arbitrary bodies (JSON of any shape, integers beyond 64 bits, raw bytes,
  wrong content types) to a step with a Pydantic body schema and to one with a JSON Schema: 2xx exactly when
  the body is valid for the schema, the handler then gets the validated data with every type kept, and a 4xx
  with a reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
import shutil
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from stepline import LLMSettings
from stepline.testing import ScriptedLLM, serve

from .conftest import ProjectFactory

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# -- schemathesis against the example apps -----------------------------------------------------------------

SEED = 20261201
MAX_EXAMPLES = 50  # per operation and phase: a few seconds per app


def desk_model(request: dict[str, Any]) -> str:
    """The research desk's three agents, answered validly whatever question the fuzzer asked."""
    system = request["messages"][0]["content"]
    if system.startswith("You plan"):
        return json.dumps({"market": "Size the market.", "risk": "Name the risks."})
    if system.startswith("You are a market analyst"):
        return "The market grows 12% a year."
    if system.startswith("You are a risk analyst"):
        return "Subsidies may end."
    return "Growing 12% a year; the risk is subsidies ending."


def copy_example(name: str, tmp_path: Path) -> Path:
    """The example in tmp_path, without its database or outputs, so that no state leaks in or out."""
    root = tmp_path / name
    shutil.copytree(
        EXAMPLES / name, root, ignore=shutil.ignore_patterns(".stepline", "__pycache__", "tests", "output", "outbox")
    )
    return root


async def schemathesis(url: str, cwd: Path) -> tuple[int, str]:
    """`st run` against a running server; its exit code and output."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error,negative_data_rejection",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",  # one worker: the same requests in the same order on every run
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 150)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


def assert_documents_the_refusals(doc: dict[str, Any], path: str) -> None:
    """An operation with a body schema documents what Stepline answers before its handler runs."""
    responses = doc["paths"][path]["post"]["responses"]
    assert {"400", "413", "415"} <= responses.keys(), responses.keys()
    assert "error" in responses["400"]["content"]["application/json"]["schema"]["properties"]
    assert "application/json" in doc["paths"][path]["post"]["requestBody"]["content"]


@pytest.mark.timeout(180)
async def test_schemathesis_finds_no_server_error_and_no_accepted_bad_data_in_financial_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLINE_REPORT_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("STEPLINE_REPORT_OUTBOX_DIR", str(tmp_path / "outbox"))
    root = copy_example("financial-report", tmp_path)
    # No model: the analyst drafts from its template, as the example's own tests run it.
    async with serve(root, store=f"sqlite:///{tmp_path}/stepline.db", llm=LLMSettings()) as app:
        doc = (await app.client.get("/openapi.json")).json()
        assert_documents_the_refusals(doc, "/reports")
        assert "202" in doc["paths"]["/reports"]["post"]["responses"]
        code, out = await schemathesis(app.url, tmp_path)
        await app.settle()
        dead = await app.stepline.dead_letters()
    assert code == 0, out[-6000:]
    assert "generated" in out and " passed" in out, out[-2000:]
    assert dead == [], [d.error for d in dead][:3]  # and the flows the accepted requests started all ended well


@pytest.mark.timeout(180)
async def test_schemathesis_finds_no_server_error_and_no_accepted_bad_data_in_research_desk(tmp_path: Path) -> None:
    root = copy_example("research-desk", tmp_path)
    # The desk's API steps call no model, but every accepted question starts the planner, the analysts and the
    # editor: a scripted model answers them all, so no step fails for want of one.
    with ScriptedLLM(*[desk_model] * 4000) as llm:
        async with serve(root, store=f"sqlite:///{tmp_path}/desk.db", llm=llm.settings()) as app:
            doc = (await app.client.get("/openapi.json")).json()
            assert_documents_the_refusals(doc, "/questions")
            # its handler answers 202 and declares no response schema: documented as the default response
            assert "default" in doc["paths"]["/questions"]["post"]["responses"]
            code, out = await schemathesis(app.url, tmp_path)
            await app.settle()
            dead = await app.stepline.dead_letters()
    assert code == 0, out[-6000:]
    assert "generated" in out and " passed" in out, out[-2000:]
    assert llm.remaining > 0
    assert dead == [], [d.error for d in dead][:3]


# -- a hypothesis property test of request bodies ----------------------------------------------------------

MAX_BODY = 16 * 1024  # small, so that the fuzzer reaches the limit too
INT64 = (-(2**63), 2**64 - 1)  # what a store keeps exactly (orjson's range)
MAX_DEPTH = 64


# The step's model, written into the project and compiled here too: the oracle is the very same model.
MODELS = """
from typing import Any

from pydantic import BaseModel


class Line(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    name: str
    count: int
    price: float | None = None
    paid: bool = False
    lines: list[Line] = []
    meta: dict[str, Any] = {}
    note: Any = None
"""
_models: dict[str, Any] = {}
exec(compile(MODELS, "models.py", "exec"), _models)
Order: type[BaseModel] = _models["Order"]
Order.model_rebuild(_types_namespace=_models)  # exec'd: `Line` is found in this namespace, not a module's

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "price": {"type": ["number", "null"]},
        "paid": {"type": "boolean"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
            },
        },
        "meta": {"type": "object"},
        "note": {},
    },
    "required": ["name", "count"],
}

STEPS = {
    "steps/models.py": MODELS,
    "steps/model_order_step.py": """
        from .models import Order

        config = {"type": "api", "name": "ModelOrder", "path": "/model", "method": "POST", "bodySchema": Order}

        async def handler(req, ctx):
            await ctx.state.set("orders", "model", req.body)  # what a store keeps: every validated body
            return {"status": 201, "body": {"repr": repr(req.body)}}
    """,
    "steps/schema_order_step.py": f"""
        config = {{"type": "api", "name": "SchemaOrder", "path": "/schema", "method": "POST",
                  "bodySchema": {ORDER_SCHEMA!r}}}

        async def handler(req, ctx):
            await ctx.state.set("orders", "schema", req.body)
            return {{"status": 201, "body": {{"repr": repr(req.body)}}}}
    """,
    "steps/query_step.py": """
        config = {"type": "api", "name": "Query", "path": "/query", "method": "GET",
                  "queryParams": {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number"}}}}

        async def handler(req, ctx):
            await ctx.state.set("query", "last", req.query_params)
            return {"repr": repr(req.query_params)}
    """,
    "steps/query_model_step.py": """
        from pydantic import BaseModel

        class Page(BaseModel):
            n: int = 0
            x: float = 0.0

        config = {"type": "api", "name": "QueryModel", "path": "/query-model", "method": "GET", "queryParams": Page}

        async def handler(req, ctx):
            await ctx.state.set("query", "model", req.query_params)
            return {"repr": repr(req.query_params)}
    """,
}


@contextlib.contextmanager
def serve_in_thread(root: Path, **options: Any) -> Iterator[str]:
    """`serve` on an event loop of its own, in a thread, so that a synchronous hypothesis test can call it for
    every example: one server for all of them. Yields the base URL."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        async with serve(root, **options) as app:
            state["url"] = app.url
            ready.set()
            await state["stop"].wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="fuzz-server", daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    if "error" in state:
        raise state["error"]
    try:
        yield state["url"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"
        if "error" in state:
            raise state["error"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("fuzz") / "project"
    for rel, source in STEPS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    with (
        serve_in_thread(root, store=f"sqlite:///{root.parent}/stepline.db", max_body=MAX_BODY) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        yield http


# The oracle: what Stepline must accept, worked out without orjson or Stepline's own code.


class Refused(Exception):
    """The body is not JSON that a store keeps exactly."""


def strict_json(raw: bytes) -> Any:
    """The body as JSON, or Refused: UTF-8 only, no NaN or Infinity, no lone surrogates, integers within 64
    bits, floats finite, nested no deeper than MAX_DEPTH."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused from None
    if _depth(value) > MAX_DEPTH:
        raise Refused
    if not storable(value):
        raise Refused
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def storable(value: Any) -> bool:
    """Every number one a store keeps exactly, every string encodable as UTF-8 (a lone surrogate is not)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def expected_by_model(value: Any) -> Any:
    """What the handler must get, by the model: its validated data; Refused when the model refuses it or its
    coercion makes a number no store keeps ("nan" for a float, 30 digits of text for an int)."""
    try:
        data = Order.model_validate(value).model_dump(mode="json")
    except ValidationError:
        raise Refused from None
    if not storable(data):
        raise Refused
    return data


ORDER_VALIDATOR = jsonschema.Draft202012Validator(ORDER_SCHEMA)


def expected_by_schema(value: Any) -> Any:
    if not ORDER_VALIDATOR.is_valid(value):
        raise Refused
    return value  # a JSON Schema changes nothing: 3.0 stays a float, 3 an int


# Content types, and whether Stepline must read the body as JSON.
CONTENT_TYPES = {
    "application/json": True,
    "application/json; charset=utf-8": True,
    "Application/JSON": True,
    "application/problem+json": True,
    "text/plain": False,
    "text/json": False,
    "application/x-www-form-urlencoded": False,
    "multipart/form-data": False,
    "application/jsonl": False,
    "application/octet-stream": False,
    "": False,  # no Content-Type header at all
}

ints64 = st.one_of(st.integers(-1000, 1000), st.sampled_from([2**53 + 1, 2**63 - 1, 2**63, INT64[1], INT64[0]]))
big_ints = st.one_of(st.integers(INT64[1] + 1, 2**200), st.integers(-(2**200), INT64[0] - 1))
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=12)


def json_of(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=10
    )


storable_json = json_of(ints64)  # what a store keeps: integers within 64 bits
any_json = json_of(st.one_of(ints64, big_ints))


def nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@dataclasses.dataclass(frozen=True)
class Deep:
    """A list nested `depth` levels around `leaf`, written into the JSON text as it is: json.dumps recurses, and
    cannot write 1000 levels."""

    leaf: Any
    depth: int


def dumps(value: Any, **options: Any) -> bytes:
    deep: list[Deep] = []

    def placeholder(o: Any) -> str:
        if not isinstance(o, Deep):
            raise TypeError(o)
        deep.append(o)
        return f"\0deep{len(deep) - 1}\0"

    text = json.dumps(value, default=placeholder, **options)
    for i, d in enumerate(deep):
        text = text.replace(json.dumps(f"\0deep{i}\0"), "[" * d.depth + json.dumps(d.leaf) + "]" * d.depth, 1)
    return text.encode()


# Orders valid for both schemas, with values at the edges (the largest integers, any float, any text)...
good_orders = st.fixed_dictionaries(
    {"name": texts, "count": ints64},
    optional={
        "price": st.one_of(st.none(), floats, ints64),
        "paid": st.booleans(),
        "lines": st.lists(st.fixed_dictionaries({"sku": texts, "qty": ints64}), max_size=3),
        "meta": st.dictionaries(texts, storable_json, max_size=3),
        "note": st.one_of(storable_json, st.builds(nested, ints64, st.integers(0, MAX_DEPTH - 1))),
        "unknown": storable_json,
    },
)
# ...and near misses: one field (now and then a second) replaced by a value wrong for it in a way a validator
# or a parser may let through: text a lax model turns into a number (digits beyond 64 bits, "nan"), integers
# beyond 64 bits, floats for integers, nesting past the limit (1000 levels with a long number inside was a 500
# once), or any JSON at all; or a required field missing. One wrong thing at a time, or the others hide it.
long_ints = st.one_of(big_ints, st.sampled_from([2**63 - 1, INT64[1], INT64[0]]))
int_text = st.one_of(big_ints.map(str), big_ints.map(str), ints64.map(str))
float_text = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1.5", "12", " 7 ", "0x10"])
deep = st.builds(
    lambda leaf, depth: Deep(leaf, depth) if depth > 500 else nested(leaf, depth),
    st.one_of(long_ints, long_ints, texts),
    st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH + 1, 1000, 1000]),
)
count_like = st.one_of(int_text, int_text, big_ints, st.sampled_from([3.0, 1e18, 1e20, 2.5, True, None, "x"]), any_json)
WRONG = {
    "name": st.one_of(ints64, st.booleans(), st.none(), any_json),
    "count": count_like,
    "price": st.one_of(float_text, float_text, texts, any_json),
    "paid": st.one_of(st.sampled_from([0, 1, "true", "yes", None]), int_text, any_json),
    "lines": st.one_of(
        st.lists(st.fixed_dictionaries({"sku": st.one_of(texts, ints64), "qty": count_like}), min_size=1),
        any_json,
    ),
    "meta": st.one_of(deep, any_json),
    "note": deep,
    "unknown": st.one_of(deep, big_ints),
    "-name": st.none(),  # dropped
    "-count": st.none(),
}
# The typed fields, where a validator coerces, more often than the free-form ones.
SPOILT = ["count", "count", "count", "price", "price", "price", "note", "note", "lines", "name", "paid", "meta"]
SPOILT += ["unknown", "-name", "-count"]


@st.composite
def bad_orders(draw: st.DrawFn) -> dict[str, Any]:
    order = draw(good_orders)
    for field in draw(st.lists(st.sampled_from(SPOILT), min_size=1, max_size=2)):
        if field.startswith("-"):
            order.pop(field[1:], None)
        else:
            order[field] = draw(WRONG[field])
    return order


def encoded(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return values.flatmap(
        lambda value: st.sampled_from(
            [dumps(value), dumps(value, ensure_ascii=False), b"\n " + dumps(value, indent=1) + b"\r\n"]
        )
    )


# Bodies that are not valid JSON, or JSON at the edges where orjson and the stdlib differ.
HOSTILE = [
    b"",
    b"   ",
    b"null",
    b"NaN",
    b'{"name": "a", "count": 1, "price": NaN}',
    b'{"name": "a", "count": 1, "price": Infinity}',
    b'{"name": "a", "count": 1, "price": 1e400}',
    b'{"name": "a", "count": 1e400}',
    b'{"name": "a", "count": 1.0}',
    b'{"name": "a", "count": 18446744073709551615}',
    b'{"name": "a", "count": 18446744073709551616}',
    b'{"name": "a", "count": -9223372036854775809}',
    b'{"name": "a", "count": 123456789012345678901234567890.5}',
    b'{"name": "a", "count": "123456789012345678901234567890"}',
    b'{"name": "a", "count": 1, "price": "nan"}',
    b'\xef\xbb\xbf{"name": "a", "count": 1}',
    b'{"name": "\\ud800", "count": 1}',
    b'{"name": "\xff", "count": 1}',
    b'{"name": "a", "count": 1,}',
    b'{"name": "a", "count": 01}',
    b'{"name": "a", "count": 1} {}',
    b'{"name": "a", "count": 1, "note": ' + b"[" * 1000 + b"12345678901234567890" + b"]" * 1000 + b"}",
    b'{"name": "a", "count": 1, "note": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"name": "a", "count": 1, "note": [' + b"1," * MAX_BODY + b"1]}",  # over the size limit
]
JSON_TYPES = sorted(t for t, is_json in CONTENT_TYPES.items() if is_json)
# Three families, each with examples of its own (in one mix of them all, hypothesis left some kinds out):
FAMILIES = {
    "valid bodies sent as JSON": st.tuples(encoded(good_orders), st.sampled_from(JSON_TYPES)),
    "near misses sent as JSON": st.tuples(encoded(bad_orders()), st.sampled_from(JSON_TYPES)),
    "anything with any content type or none": st.tuples(
        st.one_of(st.binary(max_size=64), st.sampled_from(HOSTILE), encoded(any_json), encoded(good_orders)),
        st.sampled_from(sorted(CONTENT_TYPES)),
    ),
}


def expected_status(raw: bytes, content_type: str, expected: Any) -> tuple[int, Any]:
    """The status Stepline must answer, and the data the handler must get when it answers 201."""
    if len(raw) > MAX_BODY:
        return 413, None
    if not raw:
        return 400, None  # a body schema needs a body
    if not CONTENT_TYPES[content_type]:
        return 415, None
    try:
        return 201, expected(strict_json(raw))
    except Refused:
        return 400, None


def check_one(client: httpx.Client, path: str, raw: bytes, content_type: str, expected: Any) -> int:
    """Post the body; assert the answer is the oracle's (and never a 5xx); return the status."""
    headers = {"content-type": content_type} if content_type else {}
    if len(raw) > MAX_BODY:
        # A new connection after a refused large body: on a kept-alive one, the next request gets a 431 (the
        # test below, which fails until the drained body stops counting as the next request's head).
        headers["connection"] = "close"
    response = client.post(path, content=raw, headers=headers)
    status, data = expected_status(raw, content_type, expected)
    assert response.status_code < 500, response.text[:2000]
    assert response.status_code == status, (status, response.text[:2000])
    if status == 201:
        # the validated data, every type kept: 3 stays an int, 3.0 a float, True a bool
        assert response.json()["repr"] == repr(data)
    else:
        refusal = response.json()
        assert refusal["error"] and refusal["traceId"] == response.headers["x-trace-id"]
        if status == 400 and raw:
            assert refusal["errors"] and all(e["message"] for e in refusal["errors"])
    return status


def edges(raw: bytes) -> list[str]:
    """The edges a body reaches, for the statistics (pytest --hypothesis-show-statistics)."""
    found = []
    if len(raw) > MAX_BODY:
        found.append("over the size limit")
    if b"[" * (MAX_DEPTH + 1) in raw:
        found.append("nested past the limit" + (", with a long number" if re.search(rb"\d{19,}", raw) else ""))
    if re.search(rb'"-?\d{20,}"', raw):
        found.append("integer text beyond 64 bits")
    if re.search(rb'"(?i:[-+]?(nan|inf|infinity|1e999))"', raw):
        found.append("non-finite number text")
    return found


def fuzz(client: httpx.Client, path: str, raw: bytes, content_type: str, expected: Any) -> None:
    for edge in edges(raw):
        event(edge)
    event(f"answered {check_one(client, path, raw, content_type, expected)}")


FUZZ = settings(
    max_examples=80,  # per family and schema: 480 requests in all
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,  # over real HTTP
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=st.data())
def test_a_pydantic_body_schema_accepts_exactly_the_valid_bodies_and_keeps_their_types(
    client: httpx.Client, family: str, data: st.DataObject
) -> None:
    raw, content_type = data.draw(FAMILIES[family], label="body and content type")
    fuzz(client, "/model", raw, content_type, expected_by_model)


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=st.data())
def test_a_json_schema_body_accepts_exactly_the_valid_bodies_and_keeps_them_unchanged(
    client: httpx.Client, family: str, data: st.DataObject
) -> None:
    raw, content_type = data.draw(FAMILIES[family], label="body and content type")
    fuzz(client, "/schema", raw, content_type, expected_by_schema)


def test_each_hostile_body_gets_the_oracles_answer_and_the_former_500s_are_400s(client: httpx.Client) -> None:
    """Every hostile body, sent as JSON to both steps, whatever hypothesis picks. Outside hypothesis on purpose:
    while a hypothesis test runs it raises the recursion limit (for the whole process, so for the server's
    thread too), and the 1000-level body below, a RecursionError and a 500 before, then parses."""
    for raw in HOSTILE:
        check_one(client, "/model", raw, "application/json", expected_by_model)
        check_one(client, "/schema", raw, "application/json", expected_by_schema)
    # the ones that were server errors or silent changes before
    deep = b'{"name": "a", "count": 1, "note": ' + b"[" * 1000 + b"12345678901234567890" + b"]" * 1000 + b"}"
    for path in ("/model", "/schema"):
        r = client.post(path, content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested more than" in r.json()["errors"][0]["message"]
    r = client.post("/model", json={"name": "a", "count": "123456789012345678901234567890"})
    assert r.status_code == 400 and r.json()["errors"][0]["path"] == "count"
    assert "beyond 64 bits" in r.json()["errors"][0]["message"]
    for text in ("nan", "-Infinity", "1e999"):
        r = client.post("/model", json={"name": "a", "count": 1, "price": text})
        assert r.status_code == 400 and r.json()["errors"][0]["path"] == "price", text
        assert "not finite" in r.json()["errors"][0]["message"]
    r = client.post("/model", json={"name": "a", "count": "12", "price": "1.5", "note": 2**64 - 1})
    assert r.status_code == 201 and r.json()["repr"] == repr(
        {"name": "a", "count": 12, "price": 1.5, "paid": False, "lines": [], "meta": {}, "note": 2**64 - 1}
    )


def test_a_request_after_a_large_body_refused_on_the_same_connection_is_answered(client: httpx.Client) -> None:
    # 400 KB: the rest of the body, thrown away after the 413, is not the next request's head (it was taken
    # for one, and past 64 KB answered 431). It only sometimes arrives after the 413: 20 tries.
    big = b"[" + b"1," * 200_000 + b"1]"
    for _ in range(20):
        with httpx.Client(base_url=client.base_url, timeout=30) as http:
            r = http.post("/schema", content=big, headers={"content-type": "application/json"})
            assert r.status_code == 413
            r = http.post("/schema", json={"name": "a", "count": 1})
            assert r.status_code == 201, r.text


def test_query_strings_never_become_numbers_no_store_keeps(client: httpx.Client) -> None:
    for path in ("/query", "/query-model"):
        for query in ("n=123456789012345678901234567890", "x=nan", "x=inf", "x=-1e999"):
            r = client.get(f"{path}?{query}")
            assert r.status_code == 400, (path, query, r.text)
            assert r.json()["errors"][0]["path"] == query.split("=")[0]
    r = client.get("/query?n=12&x=1.5")
    assert r.status_code == 200 and r.json()["repr"] == repr({"n": 12, "x": 1.5})
    r = client.get("/query-model?n=18446744073709551615&x=-2.5")
    assert r.status_code == 200 and r.json()["repr"] == repr({"n": 2**64 - 1, "x": -2.5})


async def test_the_openapi_document_names_each_refusal_and_keeps_the_success_response(
    make_project: ProjectFactory,
) -> None:
    root = make_project({rel: source for rel, source in STEPS.items() if "query" not in rel})
    async with serve(root) as app:
        doc = (await app.client.get("/openapi.json")).json()
    for path in ("/model", "/schema"):
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["required"] is True
        assert list(op["requestBody"]["content"]) == ["application/json"]
        assert {"400", "413", "415", "default"} == op["responses"].keys()
