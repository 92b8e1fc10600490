"""Tools an agent may call: typed Python functions, the project's API steps, and emits to its topics.

A function's JSON Schema comes from its signature (types, defaults) and its docstring (the first paragraph
describes the tool; an `Args:` section describes the parameters). A step tool takes the same schemas as
the step, and its arguments are validated exactly as an HTTP request or an emit would be.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError, create_model

from stepline import _json
from stepline._errors import SchemaValidationError, ToolArgumentsError, ToolError
from stepline.steps.config import ApiConfig, EventConfig
from stepline.steps.request import ApiRequest, unpack_result

if TYPE_CHECKING:
    from stepline.core.context import RunContext, StepCaller
    from stepline.steps.project import Step
    from stepline.steps.schema import Schema

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Invoke = Callable[[dict[str, Any], "RunContext"], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """One tool as the model sees it (name, description, JSON Schema) and how to run it.

    Build one with `Tool.function(fn)`, `Tool.step("GetReport")` or `Tool.emit("report.requested")`;
    a plain function in a `tools=[...]` list is turned into a tool by `Tool.function` too."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    kind: Literal["function", "step", "emit", "mcp"] = "function"
    target: str = ""  # the function's qualified name, the step's name or the topic
    invoke: Invoke | None = None  # None for a step or emit tool until it is resolved against the project
    # A person approves each call before it runs (ctx.approvals): the agent's run suspends until then, and a
    # rejection (or no decision within approval_timeout seconds) goes back to the model as the result.
    needs_approval: bool = False
    approval_timeout: float | None = None

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @classmethod
    def function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        needs_approval: bool = False,
        approval_timeout: float | None = None,
    ) -> Tool:
        """A tool from a typed function (sync or async). A parameter named `ctx` receives the step's context.
        With `needs_approval`, a person approves each call before it runs (see docs/durable.md)."""
        name = name or fn.__name__
        _check_name(name)
        summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except NameError as exc:  # a type defined inside a function, out of reach of the annotations
            raise ToolError(
                f"tool {name!r}: a type in its signature cannot be resolved ({exc}); "
                "define the types it uses at module level"
            ) from None
        fields: dict[str, Any] = {}
        wants_ctx = False
        for param in inspect.signature(fn).parameters.values():
            if param.name == "ctx":
                wants_ctx = True
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolError(f"tool {name!r}: *args and **kwargs cannot be described to a model; name them")
            if param.name not in hints:
                raise ToolError(
                    f"tool {name!r}: parameter {param.name!r} has no type; annotate it (e.g. `{param.name}: str`)"
                )
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints[param.name], _described(default, arg_docs.get(param.name)))
        model = create_model(f"{name}_arguments", **fields)
        schema = _without_titles(model.model_json_schema())
        is_async = inspect.iscoroutinefunction(fn)

        async def invoke(arguments: dict[str, Any], ctx: RunContext) -> Any:
            try:
                parsed = model.model_validate(arguments)
            except ValidationError as exc:
                raise ToolArgumentsError(_pydantic_message(exc)) from None
            kwargs = {key: getattr(parsed, key) for key in fields}
            if wants_ctx:
                kwargs["ctx"] = ctx
            if is_async:
                return await fn(**kwargs)
            return await asyncio.to_thread(fn, **kwargs)  # a blocking tool must not stall the other handlers

        qualname = getattr(fn, "__qualname__", name)
        described = description or summary or name
        return cls(name, described, schema, "function", qualname, invoke, needs_approval, approval_timeout)

    @classmethod
    def step(
        cls,
        step: str,
        *,
        name: str | None = None,
        description: str | None = None,
        needs_approval: bool = False,
        approval_timeout: float | None = None,
    ) -> Tool:
        """Call one of the project's API steps, in the same trace, with the step's own validation."""
        return cls(
            name or step, description or "", kind="step", target=step,
            needs_approval=needs_approval, approval_timeout=approval_timeout,
        )  # fmt: skip

    @classmethod
    def emit(
        cls,
        topic: str,
        *,
        name: str | None = None,
        description: str | None = None,
        needs_approval: bool = False,
        approval_timeout: float | None = None,
    ) -> Tool:
        """Emit an event to a topic (the calling step must declare it in `emits`), validated like any emit."""
        tool_name = name or emit_tool_name(topic)
        return cls(
            tool_name, description or "", kind="emit", target=topic,
            needs_approval=needs_approval, approval_timeout=approval_timeout,
        )  # fmt: skip

    def resolve(self, caller: StepCaller) -> Tool:
        """A step or emit tool with its schema and behaviour from the loaded project."""
        if self.invoke is not None:
            return self
        _check_name(self.name)
        if self.kind == "step":
            return _api_step_tool(self, caller)
        return _emit_tool(self, caller)


def emit_tool_name(topic: str) -> str:
    """The name of the tool that emits to `topic`, here and in `stepline mcp`: `emit_` and the topic."""
    return "emit_" + re.sub(r"[^A-Za-z0-9_-]", "_", topic)


def as_tool(item: Tool | Callable[..., Any]) -> Tool:
    if isinstance(item, Tool):
        return item
    if callable(item):
        return Tool.function(item)
    raise ToolError(f"{item!r} is not a tool: pass a function, Tool.step(...), Tool.emit(...) or Tool.function(...)")


def result_text(result: Any) -> str:
    """What the model reads back from a tool: text as it is, anything else as JSON."""
    from stepline import _json

    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return _json.dumps(result).decode()


# -- step and emit tools --------------------------------------------------------------------------------


def api_step(caller: StepCaller, name: str) -> Step[ApiConfig]:
    found = caller.project.steps.get(name)
    step = found.of(ApiConfig) if found is not None else None
    if step is None:
        api = ", ".join(s.name for s in caller.project.api_steps) or "none"
        raise ToolError(f"Tool.step({name!r}): no API step of that name (API steps: {api})")
    return step


def api_parameters(config: ApiConfig) -> dict[str, Any]:
    """An API step's inputs as one JSON Schema object: path parameters, `body` and `query`."""
    path_params = _path_params(config)
    properties: dict[str, Any] = {p: {"type": "string"} for p in path_params}
    required = list(path_params)
    if config.body_schema is not None:
        properties["body"] = config.body_schema.json_schema()
        required.append("body")
    if config.query_params is not None and not isinstance(config.query_params, list):
        properties["query"] = config.query_params.json_schema()
    elif config.query_params:
        properties["query"] = {
            "type": "object",
            "properties": {q.name: {"type": "string", "description": q.description or ""} for q in config.query_params},
            "required": [q.name for q in config.query_params if q.required],
        }
    return {"type": "object", "properties": properties, "required": required}


def api_request(config: ApiConfig, arguments: dict[str, Any]) -> ApiRequest:
    """The request an HTTP call with these arguments would make, validated as the route validates it."""
    path_params = _path_params(config)
    missing = [p for p in path_params if not isinstance(arguments.get(p), str | int)]
    if missing:
        raise ToolArgumentsError(f"missing path parameter(s): {', '.join(missing)}")
    body = arguments.get("body")
    try:
        if config.body_schema is not None:
            body = config.body_schema.validate(body, "the body")
        query = dict(arguments.get("query") or {})
        if config.query_params is not None and not isinstance(config.query_params, list):
            query = config.query_params.validate(query, "the query")
    except SchemaValidationError as exc:
        raise ToolArgumentsError(str(exc)) from None
    path = config.path
    for p in path_params:
        path = re.sub(r"{" + p + r"(?::[^}]*)?}", str(arguments[p]), path)
    # The body as the tool sent it, as JSON: a handler that reads the raw body sees what a client would send.
    raw = b"" if body is None else _json.dumps(body)
    return ApiRequest(
        body=body,
        path_params={p: str(arguments[p]) for p in path_params},
        query_params=query,
        headers={"content-type": "application/json"} if body is not None else {},
        raw_body=raw.decode(),
        body_bytes=raw,
        method=config.method,
        path=path,
    )


def topic_schema(caller: StepCaller, topic: str) -> Schema | None:
    """The input schema of the topic's subscribers (the first that declares one)."""
    return next(
        (
            s.config.input
            for s in caller.project.subscribers(topic)
            if isinstance(s.config, EventConfig) and s.config.input is not None
        ),
        None,
    )


def topic_data(caller: StepCaller, topic: str, arguments: Any) -> Any:
    schema = topic_schema(caller, topic)
    if schema is None:
        return arguments
    try:
        return schema.validate(arguments, f"the data for topic {topic!r}")
    except SchemaValidationError as exc:
        raise ToolArgumentsError(str(exc)) from None


def _path_params(config: ApiConfig) -> list[str]:
    return re.findall(r"{(\w+)(?::[^}]*)?}", config.path)


def _api_step_tool(tool: Tool, caller: StepCaller) -> Tool:
    step = api_step(caller, tool.target)
    config = step.config
    description = tool.description or config.description or f"{config.method} {config.path}"

    async def invoke(arguments: dict[str, Any], ctx: RunContext) -> Any:
        request = api_request(config, arguments)
        status, response, _headers = unpack_result(await caller.call_api(step, request, trace_id=ctx.trace_id))
        return {"status": status, "body": response}

    return replace(tool, description=description, parameters=api_parameters(config), invoke=invoke)


def _emit_tool(tool: Tool, caller: StepCaller) -> Tool:
    schema = topic_schema(caller, tool.target)
    parameters = schema.json_schema() if schema is not None else {"type": "object", "description": "the event's data"}
    names = ", ".join(s.name for s in caller.project.subscribers(tool.target)) or "no step yet"
    description = tool.description or f"Emit an event to topic {tool.target!r} (handled by {names})."

    async def invoke(arguments: dict[str, Any], ctx: RunContext) -> Any:
        await ctx.emit(tool.target, topic_data(caller, tool.target, arguments))
        return {"emitted": tool.target}

    return replace(tool, description=description, parameters=parameters, invoke=invoke)


# -- helpers ----------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ToolError(f"tool name {name!r}: use 1 to 64 letters, digits, '_' or '-' (pass name=...)")


def _described(default: Any, doc: str | None) -> Any:
    from pydantic import Field

    return Field(default, description=doc) if doc else default


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and `name: text` lines of an `Args:` (or `Parameters:`) section."""
    summary = doc.split("\n\n", 1)[0].strip().replace("\n", " ")
    args: dict[str, str] = {}
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.*\n?)+)", doc, re.M)
    if section:
        current = None
        for line in section.group(1).splitlines():
            match = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
            if match and (current is None or len(line) - len(line.lstrip()) <= _indent(section.group(1))):
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return summary, args


def _indent(block: str) -> int:
    first = block.splitlines()[0]
    return len(first) - len(first.lstrip())


def _without_titles(schema: Any) -> Any:
    # Titles generated from Python names only add tokens to every request.
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def _pydantic_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors()]
    return "invalid arguments: " + "; ".join(parts)
