"""Step configs: the typed models, and the reading of the plain-dict format into them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from stepline._errors import NotASchemaError, Problem
from stepline.steps.cron import CronSchedule
from stepline.steps.schema import Schema

STEP_TYPES = ("api", "event", "cron", "noop")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _to_schema(value: Any) -> Schema | None:
    if value is None or isinstance(value, Schema):
        return value
    try:
        return Schema.of(value)
    except NotASchemaError as exc:
        raise ValueError(str(exc)) from None


SchemaField = Annotated[Schema | None, BeforeValidator(_to_schema)]


class Emit(BaseModel):
    """One declared emit. A plain string in a config means `Emit(topic=...)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    topic: str = Field(min_length=1)
    label: str | None = None
    conditional: bool = False


def _to_emits(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(f'must be a list of topics, like ["{value}"], not a single string')
    if isinstance(value, list | tuple):
        return [{"topic": v} if isinstance(v, str) else v for v in value]
    return value


EmitList = Annotated[list[Emit], BeforeValidator(_to_emits)]


def _to_topics(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(f'must be a list of topics, like ["{value}"], not a single string')
    return value


TopicList = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_to_topics)]


class Backoff(BaseModel):
    """Delay before retry n is min(max, initial * multiplier**(n-1)), then +/- jitter (a fraction)."""

    model_config = ConfigDict(extra="forbid")
    initial: float = Field(1.0, ge=0)
    max: float = Field(60.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, le=1)

    def delay(self, attempt: int, rand: float) -> float:
        """`rand` is uniform in [0, 1); injected so the arithmetic is testable."""
        base = min(self.max, self.initial * self.multiplier ** max(0, attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))


class HandlerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    timeout: float = Field(30.0, gt=0, description="seconds before the handler is cancelled")
    concurrency: int | None = Field(None, ge=1, description="most deliveries of this step run at once")
    ram: int | None = Field(None, description="accepted for compatibility; not enforced")
    cpu: int | None = Field(None, description="accepted for compatibility; not enforced")


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["standard", "fifo"] = "standard"
    max_retries: int = Field(3, ge=0, alias="maxRetries")
    visibility_timeout: float | None = Field(None, gt=0, alias="visibilityTimeout")
    delay_seconds: float = Field(0.0, ge=0, alias="delaySeconds")
    backoff: Backoff = Field(default_factory=Backoff)
    # The most deliveries of this step the queue may hold (waiting, delayed, running) before an API step's
    # emit to it is refused with a 503 and Retry-After instead of queued: intake that outpaces the workers
    # then pushes back on its callers, rather than growing the backlog and its latency without bound.
    # Emits from event and cron steps are never refused (their work was accepted already). None: no limit.
    max_backlog: int | None = Field(None, ge=1, alias="maxBacklog")


class DurableSettings(BaseModel):
    """A run's journal (ctx.step, ctx.sleep, ctx.wait_for; docs/durable.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # What a suspended run does when it resumes on changed code: go on from its journal (the journal is
    # keyed by name, so added and removed steps behave as the code reads), with a warning in the log and the
    # trace; or go to the dead letters, to be replayed from the top on purpose.
    on_code_change: Literal["continue", "dead_letter"] = Field("continue", alias="onCodeChange")
    max_entries: int = Field(1000, ge=1, alias="maxEntries")
    max_result_bytes: int = Field(1024 * 1024, ge=1, alias="maxResultBytes")


class Infrastructure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handler: HandlerSettings = Field(default_factory=HandlerSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    durable: DurableSettings = Field(default_factory=DurableSettings)


class _StepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    description: str | None = None
    flows: TopicList = Field(default_factory=list)
    emits: EmitList = Field(default_factory=list)
    virtual_emits: EmitList = Field(default_factory=list, alias="virtualEmits")
    virtual_subscribes: TopicList = Field(default_factory=list, alias="virtualSubscribes")

    @property
    def emit_topics(self) -> list[str]:
        return [e.topic for e in self.emits]


class QueryParam(BaseModel):
    """The documentation-only query parameter form: `{"name": "page", "description": "..."}`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    required: bool = False


class ApiConfig(_StepConfig):
    type: Literal["api"] = "api"
    path: str
    method: str = "GET"
    body_schema: SchemaField = Field(None, alias="bodySchema")
    response_schema: dict[int, Schema] = Field(default_factory=dict, alias="responseSchema")
    query_params: Schema | list[QueryParam] | None = Field(None, alias="queryParams")
    middleware: list[Callable[..., Any]] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'must start with "/", like "/{value}"')
        if re.search(r"\{[^}]*$|^[^{]*\}", value):
            raise ValueError("has an unbalanced { or }")
        return re.sub(r"/:([A-Za-z_][A-Za-z0-9_]*)", r"/{\1}", value)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        upper = value.upper()
        if upper not in HTTP_METHODS:
            raise ValueError(f"{value!r} is not an HTTP method; use one of {', '.join(HTTP_METHODS)}")
        return upper

    @field_validator("query_params", mode="before")
    @classmethod
    def _query(cls, value: Any) -> Any:
        if isinstance(value, list):
            return value
        return _to_schema(value)

    @field_validator("response_schema", mode="before")
    @classmethod
    def _responses(cls, value: Any) -> Any:
        if value is None:
            return {}
        statuses = isinstance(value, dict) and value and all(str(k).isdigit() for k in value)
        if not statuses:
            value = {200: value}  # a single schema describes the success response
        out: dict[int, Schema] = {}
        for status, schema in value.items():
            code = int(status)
            if not 100 <= code <= 599:
                raise ValueError(f"{status!r} is not an HTTP status code")
            try:
                out[code] = Schema.of(schema)
            except NotASchemaError as exc:
                raise ValueError(f"status {code}: {exc}") from None
        return out

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{([^}:]+)", self.path)


class EventConfig(_StepConfig):
    type: Literal["event"] = "event"
    subscribes: TopicList = Field(min_length=1)
    input: SchemaField = None
    # The topics its handler may ctx.wait_for: their events are kept for waits (docs/durable.md).
    waits_for: TopicList = Field(default_factory=list, alias="waitsFor")
    infrastructure: Infrastructure = Field(default_factory=Infrastructure)


class CronConfig(_StepConfig):
    type: Literal["cron"] = "cron"
    cron: str
    timezone: str = "UTC"
    # A tick missed while no worker ran: "once" runs it once at start-up (however many were missed),
    # "skip" waits for the next one.
    missed: Literal["once", "skip"] = "once"
    waits_for: TopicList = Field(default_factory=list, alias="waitsFor")
    # A tick is a delivery like an event's: the same timeout, lease, retries and dead letters.
    infrastructure: Infrastructure = Field(default_factory=Infrastructure)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        CronSchedule(value)  # raises ValueError with the reason
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone") from None
        return value

    @property
    def schedule(self) -> CronSchedule:
        return CronSchedule(self.cron, self.timezone)


class NoopConfig(_StepConfig):
    type: Literal["noop"] = "noop"


StepConfig = ApiConfig | EventConfig | CronConfig | NoopConfig
_BY_TYPE: dict[str, type[_StepConfig]] = {
    "api": ApiConfig,
    "event": EventConfig,
    "cron": CronConfig,
    "noop": NoopConfig,
}

# Keys some step frameworks write that mean nothing here; accepted so their files load unchanged.
_IGNORED_KEYS = frozenset({"includeFiles", "label"})

_FIXES: dict[str, str] = {
    "name": 'give the step a unique name, like "name": "SendInvoice"',
    "path": 'give the route, like "path": "/reports/{id}" (":id" works too)',
    "method": 'use an HTTP method, like "method": "POST"',
    "subscribes": 'list the topics this step handles, like "subscribes": ["report.requested"]',
    "emits": 'list the topics this step emits, like "emits": ["report.done"]',
    "cron": 'use a 5-field (min hour day month weekday) or 6-field (with seconds first) expression, like "0 9 * * 1"',
    "timezone": 'use an IANA zone name, like "Europe/Berlin"',
    "missed": 'use "once" (run a missed tick once at start-up) or "skip"',
    "bodySchema": "use a Pydantic model class or a JSON Schema dict",
    "input": "use a Pydantic model class or a JSON Schema dict",
    "responseSchema": "map status codes to schemas, like {200: MyModel}, or give one schema",
    "queryParams": 'use a schema, or a list like [{"name": "page", "description": "..."}]',
    "middleware": "list async functions `async def mw(req, ctx, next): return await next()`",
    "flows": 'list flow names, like "flows": ["billing/collections"]',
    "waitsFor": 'list the topics the handler may ctx.wait_for, like "waitsFor": ["payment.received"]',
}


def parse_config(raw: Any) -> tuple[StepConfig | None, list[Problem]]:
    """Read a step's `config` (dict or typed). Problems carry field and fix; `file` is filled by the caller."""
    if isinstance(raw, ApiConfig | EventConfig | CronConfig | NoopConfig):
        return raw, []
    if not isinstance(raw, dict):
        return None, [
            Problem(
                "",
                "config",
                f"config is a {type(raw).__name__}, not a dict or a step config object",
                'define `config = {"type": "event", "name": ..., ...}` or use EventConfig(...)',
            )
        ]
    step_type = raw.get("type")
    if step_type not in _BY_TYPE:
        hint = difflib.get_close_matches(str(step_type), STEP_TYPES, n=1)
        what = "is missing" if step_type is None else f"{step_type!r} is not a step type"
        fix = f'set "type" to one of {", ".join(STEP_TYPES)}'
        if hint:
            fix += f" (did you mean {hint[0]!r}?)"
        return None, [Problem("", "type", f"step type {what}", fix)]
    model = _BY_TYPE[step_type]
    data = {k: v for k, v in raw.items() if k not in _IGNORED_KEYS}
    try:
        config: StepConfig = model.model_validate(data)  # type: ignore[assignment]
        return config, []
    except ValidationError as exc:
        return None, _problems(exc, model)


def _problems(exc: ValidationError, model: type[_StepConfig]) -> list[Problem]:
    known = [f.alias or name for name, f in model.model_fields.items()]
    problems: list[Problem] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        top = loc[0] if loc else ""
        field_name = ".".join(loc)
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            hint = difflib.get_close_matches(top, known, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"remove it; a {model.__name__} accepts {', '.join(known)}"
            problems.append(Problem("", field_name, f"unknown config key {top!r}", fix))
            continue
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            kind = model.model_fields["type"].default
            message = f"{field_name!r} is required for {'an' if kind in ('api', 'event') else 'a'} {kind} step"
        problems.append(Problem("", field_name, message, _FIXES.get(top, "see docs/steps.md for this field")))
    return problems
