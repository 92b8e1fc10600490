"""OpenAPI 3.1 from the API steps: paths, parameters, bodies and responses, schemas under components."""

from __future__ import annotations

import copy
import json
from typing import Any

from stepline.steps.config import ApiConfig
from stepline.steps.project import Project
from stepline.steps.schema import Schema


def openapi(project: Project, title: str | None = None, version: str = "0.1.0") -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for step in sorted(project.api_steps, key=lambda s: (s.config.path, s.name)):
        config = step.config
        op: dict[str, Any] = {"operationId": config.name, "summary": config.description or config.name}
        if config.flows:
            op["tags"] = list(config.flows)
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in config.path_params]
        params += _query_parameters(config, components)
        if params:
            op["parameters"] = params
        if config.body_schema is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _hoist(config.body_schema, components)}},
            }
        responses: dict[str, Any] = {}
        for status, schema in sorted(config.response_schema.items()):
            responses[str(status)] = {
                "description": _reason(status),
                "content": {"application/json": {"schema": _hoist(schema, components)}},
            }
        # What Stepline itself answers before the handler runs (src/stepline/_http.py), documented so that a
        # client, and a fuzzer such as schemathesis, knows these refusals are the contract: 400 with the field
        # errors, 415 for a body that is not sent as JSON, 413 for one over the size limit. The handler's own
        # answers are `default` unless `responseSchema` names them: a step with a body schema and no response
        # schema used to document its 400 alone, as if it had no success response at all.
        if config.body_schema is not None or config.query_params is not None:
            responses.setdefault("400", _refusal("The request does not match its schema"))
        if config.body_schema is not None:
            responses.setdefault("413", _refusal("The body is larger than the server's limit"))
            responses.setdefault("415", _refusal("The body is not sent as JSON (Content-Type: application/json)"))
        if not config.response_schema:
            responses["default"] = {"description": "Response"}
        op["responses"] = responses
        paths.setdefault(config.path, {})[config.method.lower()] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title or project.root.name, "version": version},
        "paths": paths,
    }
    if components:
        doc["components"] = {"schemas": components}
    return doc


# The body of every refusal Stepline sends itself: {"error", "errors": [{"path", "message"}], "traceId"}.
_REFUSAL = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                "required": ["path", "message"],
            },
        },
        "more": {"type": "string"},
        "traceId": {"type": "string"},
    },
    "required": ["error"],
}


def _refusal(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": copy.deepcopy(_REFUSAL)}}}


def _query_parameters(config: ApiConfig, components: dict[str, Any]) -> list[dict[str, Any]]:
    query = config.query_params
    if query is None:
        return []
    if isinstance(query, list):
        return [
            {
                "name": q.name,
                "in": "query",
                "required": q.required,
                "schema": {"type": "string"},
                **({"description": q.description} if q.description else {}),
            }
            for q in query
        ]
    schema = _hoist(query, components)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _hoist(schema: Schema, components: dict[str, Any]) -> dict[str, Any]:
    """Move `$defs` into components and point the refs there; name models by their class."""
    text = json.dumps(schema.json_schema()).replace('"#/$defs/', '"#/components/schemas/')
    body: dict[str, Any] = json.loads(text)
    components.update(body.pop("$defs", {}))
    if schema.model is not None:
        components[schema.model.__name__] = body
        return {"$ref": f"#/components/schemas/{schema.model.__name__}"}
    return body


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Response"
