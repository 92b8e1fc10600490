"""Stream definitions: a `*_stream.py` file names a stream, the schema of its items, and who may watch it.

    config = {"name": "progress", "schema": Progress}          # a pydantic model or a JSON Schema

    def can_access(subscription, auth):                        # optional; may be async
        return auth is not None and subscription.group_id == auth["user"]

Motia's stream files (`config = {"name", "schema", "baseConfig": {"storageType": "default"}}`) load as
they are; `canAccess` in the config works as `can_access` does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepline._errors import NotASchemaError, Problem
from stepline.steps.schema import Schema

# A name is what `ctx.streams.<name>` and the wire protocol's streamName say: a plain identifier keeps both
# (and the Redis and SQLite keys) unambiguous.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
_KEYS = {"name", "schema", "baseConfig", "base_config", "canAccess", "can_access", "description"}


@dataclass(frozen=True)
class Subscription:
    """What a client asks to watch: one group of a stream, or one item of it (`id`)."""

    stream: str
    group_id: str
    id: str | None = None

    def __getitem__(self, key: str) -> Any:
        """Motia's spelling (`subscription["groupId"]`), for access checks written for Motia."""
        names = {"groupId": self.group_id, "group_id": self.group_id, "id": self.id, "streamName": self.stream}
        if key not in names:
            raise KeyError(key)
        return names[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


AccessCheck = Callable[[Subscription, Any], Any]  # returns a bool, or an awaitable of one


@dataclass(eq=False)
class StreamDef:
    name: str
    schema: Schema | None
    can_access: AccessCheck | None
    file: Path
    rel: str
    description: str = ""

    def validate(self, item: Any, what: str) -> dict[str, Any]:
        """The item as stored (a model's defaults filled), or SchemaValidationError."""
        value = self.schema.validate(item, what) if self.schema is not None else item
        return value  # type: ignore[no-any-return]


def is_stream_file(path: Path) -> bool:
    return path.name.endswith(("_stream.py", ".stream.py"))


def parse_stream(module: Any, file: Path, rel: str, line: int | None) -> tuple[StreamDef | None, list[Problem]]:
    """The stream a loaded `*_stream.py` module defines, or the problems that stop it loading."""
    config = getattr(module, "config", None)
    if not isinstance(config, dict):
        what = "no `config`" if config is None else f"a `config` that is a {type(config).__name__}"
        fix = 'define `config = {"name": "progress", "schema": {...}}` at module level'
        return None, [Problem(rel, "config", f"the stream file has {what}, not a dict", fix, line)]
    problems: list[Problem] = []
    name = config.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        got = "no name" if name is None else f"the name {name!r}"
        problems.append(
            Problem(
                rel,
                "name",
                f"the stream has {got}; a stream name is letters, digits, '_', '.' or '-', starting with a letter",
                'add `"name": "progress"` (it is what ctx.streams.progress and clients use)',
                line,
            )
        )
    schema: Schema | None = None
    if "schema" not in config:
        problems.append(
            Problem(
                rel,
                "schema",
                "the stream has no schema for its items",
                'add `"schema": MyModel` (a pydantic model) or a JSON Schema such as {"type": "object"}',
                line,
            )
        )
    else:
        try:
            schema = Schema.of(config["schema"])
        except NotASchemaError as exc:
            problems.append(Problem(rel, "schema", str(exc), "give a pydantic model class or a JSON Schema", line))
    base = config.get("baseConfig", config.get("base_config"))
    if base is not None:
        storage = base.get("storageType", "default") if isinstance(base, dict) else base
        if storage != "default":
            problems.append(
                Problem(
                    rel,
                    "baseConfig",
                    f"storage {storage!r} is not supported: stream items are kept in the project's store",
                    'remove baseConfig, or use {"storageType": "default"}',
                    line,
                )
            )
    unknown = sorted(set(config) - _KEYS - {"type"})
    if unknown:
        problems.append(
            Problem(
                rel,
                unknown[0],
                f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in a stream's config",
                f"remove it; a stream's config takes {', '.join(sorted(_KEYS - {'base_config', 'can_access'}))}",
                line,
                severity="warning",
            )
        )
    check = config.get("canAccess", config.get("can_access", getattr(module, "can_access", None)))
    if check is not None and not callable(check):
        problems.append(
            Problem(
                rel,
                "can_access",
                f"can_access is a {type(check).__name__}, not a function",
                "define `def can_access(subscription, auth) -> bool` (or async def)",
                line,
            )
        )
    elif check is not None and not _takes_two(check):
        problems.append(
            Problem(
                rel,
                "can_access",
                "can_access must take two arguments, (subscription, auth)",
                "define `def can_access(subscription, auth) -> bool` (or async def)",
                line,
            )
        )
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        return None, problems
    assert isinstance(name, str)
    description = config.get("description", "")
    stream = StreamDef(name, schema, check, file, rel, description if isinstance(description, str) else "")
    return stream, problems


def _takes_two(func: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return len(required) <= 2 <= len(positional)
