"""Project settings from `stepline.toml` and the environment: the `[llm]` table of `ctx.llm`, `[mcp]`,
what `stepline mcp` serves, `[streams]`, and how the project is served and stored.

    [llm]
    base_url = "http://127.0.0.1:8080/v1"   # any OpenAI-compatible endpoint; env STEPLINE_LLM_BASE_URL
    model = "gpt-4o-mini"                    # the default model; env STEPLINE_LLM_MODEL
    api_key_env = "OPENAI_API_KEY"           # the variable that holds the key (keys never go in this file)
    timeout = 60                             # seconds per call
    max_retries = 4                          # on 429, 5xx, timeouts and dropped connections
    redact = "myproject.privacy:scrub"       # messages -> messages, before they are written to traces

    [llm.prices."gpt-4o-mini"]               # USD per million tokens, for the cost in traces
    input = 0.15
    output = 0.60

    [mcp]                                    # nothing is served unless listed here
    steps = ["GetWeather"]                   # API steps, by name ("*": every API step)
    topics = ["weather.alert"]               # topics to emit to ("*": every topic with subscribers)

    [streams]
    authenticate = "auth:authenticate"       # who stream clients are (docs/streams.md); default: anyone

    [server]                                 # stepline dev and start (their options win over these)
    host = "127.0.0.1"
    port = 3000
    workers = 1                              # start only
    role = "all"                             # start only: all, api or worker
    grace = 30                               # seconds running handlers get on SIGTERM

    [http]
    max_body = "1MB"
    body_timeout = 30
    allowed_hosts = ["app.internal"]
    cors_origins = ["https://app.example.com"]

    [store]
    url = "sqlite:///.stepline/stepline.db"  # STEPLINE_STORE and --store win

    [engine]
    concurrency = 64
    idempotency_window = 86400

    [traces]
    keep_days = 7
    max_mb = 1024                            # 0: no cap

Every key, its default and what wins over it: docs/configuration.md. The environment wins over the file,
so a deployment can point the same project at another provider or store; an option given on the command
line or to `Stepline(...)` wins over both.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stepline._errors import Problem, ProjectLoadError

SETTINGS_FILE = "stepline.toml"
Redactor = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0, description="USD per million input (prompt) tokens")
    output: float = Field(ge=0, description="USD per million output (completion) tokens")


class LLMSettings(BaseModel):
    """How `ctx.llm` reaches its model. Every field has a default, so a project without settings loads."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://api.openai.com/v1"
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    api_key: str | None = Field(None, exclude=True)  # set in code or from api_key_env, never from the file
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    retry_base_delay: float = Field(0.5, ge=0)
    redact: str | Redactor | None = None
    prices: dict[str, Price] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def key(self) -> str:
        # Local servers ignore the key, but the client insists on one.
        return self.api_key or os.environ.get(self.api_key_env) or "not-needed"

    def price(self, model: str) -> Price | None:
        return self.prices.get(model)

    def redactor(self) -> Redactor | None:
        if self.redact is None or callable(self.redact):
            return self.redact
        module, _, name = self.redact.partition(":")
        function = getattr(importlib.import_module(module), name)
        if not callable(function):
            raise TypeError(f"llm.redact names {self.redact!r}, which is not a function")
        redactor: Redactor = function
        return redactor


class McpSettings(BaseModel):
    """What `stepline mcp` serves. Nothing unless listed: an MCP client is often a model, and an API step
    may decide things (approve a refund) that no model should reach by default."""

    model_config = ConfigDict(extra="forbid")

    steps: list[str] = Field(default_factory=list, description='API steps by name; "*" for every API step')
    topics: list[str] = Field(default_factory=list, description='topics to emit to; "*" for every subscribed topic')

    @property
    def exposes_nothing(self) -> bool:
        return not self.steps and not self.topics


class StreamSettings(BaseModel):
    """How stream clients are let in (docs/streams.md)."""

    model_config = ConfigDict(extra="forbid")

    # "module:function" in the project: (StreamAuthRequest) -> auth, or raise to refuse the client
    authenticate: str | None = None

    def authenticator(self) -> Callable[..., Any] | None:
        if self.authenticate is None:
            return None
        module, _, name = self.authenticate.partition(":")
        function = getattr(importlib.import_module(module), name, None) if name else None
        if not callable(function):
            raise TypeError(
                f"streams.authenticate names {self.authenticate!r}, which is not a function: give "
                '"module:function", a module of the project (like "auth:authenticate" for auth.py)'
            )
        return function  # type: ignore[no-any-return]


_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}


def parse_size(text: str | int) -> int:
    """`1MB`, `512KB`, `2GB` or a number of bytes (K, M and G are powers of 1024); ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        number = str(text).strip().upper()
        unit = number.lstrip("0123456789.")
        try:
            size = int(float(number[: len(number) - len(unit)]) * _UNITS[unit.strip()])
        except (ValueError, KeyError):
            raise ValueError(f"{text!r} is not a size: write it like 1MB, 512KB or 1048576") from None
    if size <= 0:
        raise ValueError("a size must be above 0")
    return size


class ServerSettings(BaseModel):
    """How `stepline dev` and `stepline start` serve the project. Read at start: a change needs a restart."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    role: Literal["all", "api", "worker"] = "all"
    grace: float = Field(30.0, ge=0)


class HttpSettings(BaseModel):
    """What a request may be, and who may call the app from a browser."""

    model_config = ConfigDict(extra="forbid")

    max_body: int = Field(1024 * 1024, description="bytes, or a size like 1MB")
    body_timeout: float = Field(30.0, gt=0)
    allowed_hosts: list[str] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("max_body", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("write a size like 1MB, 512KB or 1048576")
        return parse_size(value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f'{origin!r} is not an origin: write it as https://app.example.com, or "*"')
        return [origin.rstrip("/") for origin in value]


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None  # None: $STEPLINE_STORE, else the SQLite file under .stepline/


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(64, ge=1, le=10_000)
    idempotency_window: float = Field(86400.0, gt=0)


class TraceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_days: float = Field(7.0, ge=0.01)
    max_mb: float = Field(1024.0, ge=0)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    traces: TraceSettings = Field(default_factory=TraceSettings)

    def restart_only(self) -> dict[str, Any]:
        """The tables read once at start: a reload that changes them changes nothing until a restart."""
        return {name: getattr(self, name).model_dump() for name in RESTART_ONLY}


RESTART_ONLY = ("server", "http", "store", "engine", "traces")
TABLES = ("llm", "mcp", "streams", *RESTART_ONLY)


_ENV = {"STEPLINE_LLM_BASE_URL": "base_url", "STEPLINE_LLM_MODEL": "model", "STEPLINE_LLM_API_KEY": "api_key"}


def load_settings(root: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read `stepline.toml` under `root` (if there is one), then the environment on top of it."""
    environ = os.environ if environ is None else environ
    path = root / SETTINGS_FILE
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ProjectLoadError(
                root, [Problem(SETTINGS_FILE, "", f"not valid TOML: {exc}", "fix the syntax at the place named")]
            ) from None
    server = raw.get("server")
    if isinstance(server, dict) and "admin_token" in server:
        raise ProjectLoadError(
            root,
            [
                Problem(
                    SETTINGS_FILE,
                    "server.admin_token",
                    "a token does not belong in a file that is committed",
                    "set STEPLINE_ADMIN_TOKEN in the environment (or in the project's .env, kept out of git)",
                )
            ],
        )
    llm = dict(raw.get("llm", {})) if isinstance(raw.get("llm", {}), dict) else raw.get("llm")
    if isinstance(llm, dict):
        if "api_key" in llm:
            raise ProjectLoadError(
                root,
                [
                    Problem(
                        SETTINGS_FILE,
                        "llm.api_key",
                        "an API key does not belong in a file that is committed",
                        'put it in an environment variable and name that variable: api_key_env = "MY_KEY"',
                    )
                ],
            )
        if "OPENAI_BASE_URL" in environ and "base_url" not in llm:
            llm["base_url"] = environ["OPENAI_BASE_URL"]
        for variable, name in _ENV.items():
            if environ.get(variable):
                llm[name] = environ[variable]
        raw = {**raw, "llm": llm}
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(
                SETTINGS_FILE,
                ".".join(str(p) for p in err["loc"]),
                err["msg"],
                _fix(err["loc"], err["type"]),
            )
            for err in exc.errors()
        ]
        raise ProjectLoadError(root, problems) from None


_FIXES = {
    "base_url": 'an OpenAI-compatible endpoint, e.g. base_url = "http://127.0.0.1:8080/v1"',
    "timeout": "seconds, a number above 0",
    "max_retries": "a whole number from 0 to 20",
    "input": "USD per million input tokens, e.g. input = 0.15",
    "output": "USD per million output tokens, e.g. output = 0.60",
    "steps": 'a list of API step names, e.g. steps = ["GetWeather"] (or ["*"] for all)',
    "topics": 'a list of topics, e.g. topics = ["weather.alert"] (or ["*"] for all)',
    "host": 'an interface to listen on, e.g. host = "0.0.0.0"',
    "port": "a port from 0 to 65535, e.g. port = 8080",
    "workers": "a whole number of worker processes, 1 or more",
    "role": 'role = "all", "api" or "worker"',
    "grace": "seconds, 0 or more, e.g. grace = 30",
    "max_body": 'a size, e.g. max_body = "4MB"',
    "body_timeout": "seconds, a number above 0",
    "allowed_hosts": 'a list of host names, e.g. allowed_hosts = ["app.internal"]',
    "cors_origins": 'a list of origins, e.g. cors_origins = ["https://app.example.com"]',
    "url": 'a store URL, e.g. url = "sqlite:///.stepline/stepline.db" or "redis://127.0.0.1:6379/0"',
    "concurrency": "a whole number of deliveries at once, 1 or more",
    "idempotency_window": "seconds, a number above 0 (86400: a day)",
    "keep_days": "days, 0.01 or more",
    "max_mb": "megabytes, 0 or more (0: no cap)",
}
_TABLE_FIXES = {
    "llm": "see docs/configuration.md#llm for the [llm] settings and their types",
    "mcp": "the [mcp] table takes steps = [...] and topics = [...] (see docs/agents.md#mcp)",
}


def _fix(loc: tuple[int | str, ...], kind: str) -> str:
    if kind == "extra_forbidden":  # a misspelt or unknown name: say which names the table takes
        if len(loc) == 1:
            return "stepline.toml has the tables " + ", ".join(f"[{t}]" for t in TABLES)
        table = str(loc[0])
        fields = _MODELS.get(table)
        if table in _TABLE_FIXES and table != "llm":
            return _TABLE_FIXES[table]
        if fields is not None:
            names = ", ".join(name for name in fields.model_fields if name != "api_key")
            return f"[{table}] takes {names} (docs/configuration.md#{table})"
        return "see docs/configuration.md for the settings and their types"
    return _FIXES.get(str(loc[-1]), "see docs/configuration.md for the settings and their types")


_MODELS: dict[str, type[BaseModel]] = {
    "llm": LLMSettings,
    "mcp": McpSettings,
    "streams": StreamSettings,
    "server": ServerSettings,
    "http": HttpSettings,
    "store": StoreSettings,
    "engine": EngineSettings,
    "traces": TraceSettings,
}
