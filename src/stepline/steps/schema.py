"""One wrapper over the two kinds of schema a step may give: a Pydantic model or a JSON Schema dict."""

from __future__ import annotations

import itertools
import math
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from stepline import _json
from stepline._errors import FieldError, NotASchemaError, SchemaValidationError

# Keywords of which a real JSON Schema object has at least one; a dict without any of them
# (like {"month": "string"}) is almost always a mistake, even though the spec would accept it.
_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "items",
        "$ref",
        "$defs",
        "definitions",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "enum",
        "const",
        "required",
        "additionalProperties",
        "patternProperties",
        "prefixItems",
        "format",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "title",
        "description",
        "$schema",
        "default",
        "examples",
        "if",
        "then",
        "else",
        "contains",
        "minItems",
        "maxItems",
    }
)


# Errors kept of one validation (a report, and a trace, need the first few, not one per wrong item): one
# more than shown, so that a reader can tell there were more.
MAX_ERRORS = 20


class Schema:
    """Validates data and describes itself as JSON Schema, whatever form the user wrote it in."""

    def __init__(self, source: type[BaseModel] | dict[str, Any]) -> None:
        self.source = source
        self._model: type[BaseModel] | None = None
        self._validator: jsonschema.protocols.Validator | None = None
        if isinstance(source, dict):
            self._json_schema = source
            self._validator = jsonschema.Draft202012Validator(source)
        else:
            self._model = source
            self._json_schema = source.model_json_schema()

    @classmethod
    def of(cls, value: Any) -> Schema:
        if isinstance(value, type) and issubclass(value, BaseModel):
            return cls(value)
        if isinstance(value, dict):
            if value and not (_SCHEMA_KEYWORDS & value.keys()):
                keys = ", ".join(repr(k) for k in list(value)[:3])
                raise NotASchemaError(
                    f"a dict with keys {keys} is not a JSON Schema (it has no schema keyword such as "
                    '"type" or "properties")'
                )
            try:
                jsonschema.Draft202012Validator.check_schema(value)
            except jsonschema.SchemaError as exc:
                where = "/".join(str(p) for p in exc.path) or "(root)"
                raise NotASchemaError(f"invalid JSON Schema at {where}: {exc.message}") from None
            return cls(value)
        if isinstance(value, BaseModel):
            raise NotASchemaError(f"got an instance of {type(value).__name__}, not the model class itself")
        raise NotASchemaError(f"got {type(value).__name__} {value!r:.60}, which is not a schema")

    @property
    def model(self) -> type[BaseModel] | None:
        return self._model

    def json_schema(self) -> dict[str, Any]:
        return self._json_schema

    @property
    def title(self) -> str | None:
        if self._model is not None:
            return self._model.__name__
        title = self._json_schema.get("title")
        return title if isinstance(title, str) else None

    def validate(self, data: Any, what: str) -> Any:
        """Return the data (JSON-compatible, defaults filled for models) or raise SchemaValidationError."""
        if self._model is not None:
            try:
                instance = self._model.model_validate(data)
            except ValidationError as exc:
                raise SchemaValidationError(what, _pydantic_errors(exc)) from None
            dumped = instance.model_dump(mode="json")
            # A model's lax coercion makes numbers that are not in the JSON it got: "1" * 30 for an int field
            # became an integer no store keeps (the handler's emit, or its response, was then a 500), and
            # "nan" or "inf" for a float field a NaN the handler got and JSON turned into null. Refused here,
            # as the same numbers sent as JSON are.
            _json.check_keepable(dumped, what, fix="send a number within 64 bits")
            return dumped
        assert self._validator is not None
        # Lazily, and no further than a report shows: a large body of wrong items has an error per item.
        errors = sorted(itertools.islice(self._validator.iter_errors(data), MAX_ERRORS + 1), key=lambda e: list(e.path))
        if errors:
            raise SchemaValidationError(
                what, [FieldError(_clip(".".join(str(p) for p in e.path)), _clip(e.message)) for e in errors]
            )
        return data

    def coerce_strings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Query strings arrive as text; turn them into the scalar types a JSON Schema asks for."""
        if self._model is not None:
            return values
        props = self._json_schema.get("properties", {})
        out: dict[str, Any] = {}
        for key, value in values.items():
            kind = props.get(key, {}).get("type") if isinstance(props.get(key), dict) else None
            out[key] = _coerce(value, kind)
        return out


def _coerce(value: Any, kind: Any) -> Any:
    if isinstance(value, list):
        return [_coerce(v, kind) for v in value] if kind != "array" else value
    if not isinstance(value, str):
        return value
    try:
        # Only numbers JSON keeps ("nan", "inf" or 30 digits stay text, which the schema then refuses).
        if kind == "integer":
            number = int(value)
            return number if _json.fits(number) else value
        if kind == "number":
            real = float(value)
            return real if math.isfinite(real) else value
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in {"true", "false", "1", "0"}:
        return value.lower() in {"true", "1"}
    return value


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)[: MAX_ERRORS + 1]
    return [FieldError(_clip(".".join(str(p) for p in err["loc"])), _clip(err["msg"])) for err in errors]


def _clip(text: str, limit: int = 200) -> str:
    # jsonschema's messages quote the value that failed: a message never echoes a large input whole.
    return text if len(text) <= limit else text[:limit] + "..."
