"""`ctx.llm`: chat, structured output, streaming and a tool-calling loop against any OpenAI-compatible endpoint.

Built on the `openai` SDK (imported on first use, so a project without agents starts as fast as before).
Retries are Stepline's own, not the SDK's, so that each one is counted in the trace: 429, 5xx, timeouts
and dropped connections back off exponentially (or as `Retry-After` says); anything else is raised at
once with what to do. Every call leaves an `llm` record in the trace (model, messages after the redaction
hook, reply, tool calls, tokens, cost, latency, retries) and every tool run a `tool` record.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from stepline._errors import (
    LLMError,
    LLMUsageError,
    StructuredOutputError,
    ToolArgumentsError,
    ToolError,
    TurnLimitError,
)
from stepline.adapters.base import TraceRecord
from stepline.agents.memory import CONVERSATIONS, Memory, Policy
from stepline.agents.tools import Tool, as_tool, result_text
from stepline.steps.settings import LLMSettings, Redactor

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from stepline.core.context import Recorder, RunContext, StepCaller, StepLogger

M = TypeVar("M", bound=BaseModel)
Messages = str | Sequence[dict[str, Any]]

# A message longer than this is cut in the trace (not in the call): traces stay small enough to list.
_TRACE_TEXT_LIMIT = 20_000
_MAX_BACKOFF = 30.0


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens


@dataclass
class ToolRun:
    """One tool call the model made, and what came of it."""

    id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None


@dataclass
class Reply:
    """What `chat` and `run` return. `str(reply)` is the text."""

    text: str
    model: str
    messages: list[dict[str, Any]]  # the whole conversation, this reply included
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None  # USD, when the model has a price in llm.prices
    tool_runs: list[ToolRun] = field(default_factory=list)
    turns: int = 1
    output: Any = None  # `run(..., output=Model)`: the final answer as an instance of Model

    def __str__(self) -> str:
        return self.text


class LLMClient:
    """One per app: the settings and one pooled HTTP client, so connections stay warm across steps."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self._client: AsyncOpenAI | None = None
        self._redactor: Redactor | None = None
        self._redactor_loaded = False  # imported on first use: the hook lives in the project's code

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.settings.base_url,
                api_key=self.settings.key(),
                timeout=self.settings.timeout,
                max_retries=0,  # ours, below: counted and traced
            )
        return self._client

    def redact(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self._redactor_loaded:
            self._redactor = self.settings.redactor()
            self._redactor_loaded = True
        if self._redactor is None:
            return messages
        return self._redactor([dict(m) for m in messages])

    def cost(self, model: str, usage: Usage) -> float | None:
        price = self.settings.price(model)
        if price is None:
            return None
        return (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1_000_000

    async def create(self, **request: Any) -> tuple[Any, int]:
        """`chat.completions.create` with retries; returns the response (or stream) and the retries used."""
        import openai

        retries = 0
        while True:
            try:
                return await self.client.chat.completions.create(**request), retries
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                if retries >= self.settings.max_retries:
                    raise LLMError(f"{_describe(exc)}; gave up after {retries} retries", retries) from exc
                retries += 1
                await asyncio.sleep(self._backoff(retries, exc))
            except openai.APIStatusError as exc:
                raise LLMError(_advice(exc, self.settings)) from exc

    def _backoff(self, attempt: int, exc: Exception) -> float:
        response = getattr(exc, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            try:
                return min(float(header), _MAX_BACKOFF)
            except ValueError:
                pass
        base = self.settings.retry_base_delay * 2 ** (attempt - 1)
        return float(min(base * random.uniform(0.5, 1.5), _MAX_BACKOFF))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class LLM:
    """`ctx.llm`. Prompts are a string (one user message) or a list of chat messages."""

    def __init__(self, client: LLMClient, caller: StepCaller, ctx: RunContext, record: Recorder) -> None:
        self._client = client
        self._caller = caller
        self._ctx = ctx
        self._record = record

    @property
    def settings(self) -> LLMSettings:
        return self._client.settings

    @property
    def logger(self) -> StepLogger:
        """The calling step's logger (what memory reports through)."""
        return self._ctx.logger

    def conversation(self, *, max_messages: int = 40, policy: Policy = "truncate") -> Memory:
        """Short-term memory shared by every step of this trace (one request's whole journey)."""
        return Memory(
            self._ctx.control, CONVERSATIONS, self._ctx.trace_id, max_messages=max_messages, policy=policy, llm=self
        )

    def memory(self, key: str, *, group: str = "memory", max_messages: int = 40, policy: Policy = "truncate") -> Memory:
        """Long-term memory under `key` in the state group `group`, across traces and restarts."""
        return Memory(self._ctx.state, group, key, max_messages=max_messages, policy=policy, llm=self)

    # -- the four ways to call -------------------------------------------------------------------

    async def chat(
        self,
        prompt: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        memory: Memory | None = None,
        **options: Any,
    ) -> Reply:
        """One completion. `options` go to the endpoint as they are (temperature, max_tokens, seed...)."""
        _check_options("chat", options)
        messages, fresh = await self._conversation(prompt, system, memory)
        model = self._model(model)
        response, usage = await self._complete("chat", model, messages, options)
        text = _text(response)
        messages.append({"role": "assistant", "content": text})
        if memory is not None:
            await memory.append(*fresh, messages[-1])
        return Reply(text, model, messages, usage, self._client.cost(model, usage))

    async def structured(
        self,
        prompt: Messages,
        output: type[M],
        *,
        system: str | None = None,
        model: str | None = None,
        repair: int = 1,
        memory: Memory | None = None,
        **options: Any,
    ) -> M:
        """A reply parsed into `output` (a Pydantic model). A reply that does not validate is sent back to
        the model with the errors, at most `repair` times, before StructuredOutputError. With `memory`,
        the prompt and the valid reply are remembered (not the failed attempts)."""
        _check_options("structured", options)
        _check_output(output, repair)
        messages, fresh = await self._conversation(prompt, system, memory)
        model = self._model(model)
        parsed, text, _usage = await self._parse_into(output, model, messages, repair, options)
        if memory is not None:
            await memory.append(*fresh, {"role": "assistant", "content": text})
        return parsed

    def stream(
        self,
        prompt: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        memory: Memory | None = None,
        to: StreamTarget | None = None,
        **options: Any,
    ) -> LLMStream:
        """`async for token in ctx.llm.stream(...)`: text as it arrives; `.text` and `.usage` once done.
        With `memory`, the prompt and the whole reply are remembered once the stream has been read to its end.
        With `to` (a stream item: `ctx.streams.answers.item(group_id, id)`), the text so far is written to it
        as it grows, for browsers watching it; `await ctx.llm.stream(..., to=...).collect()` needs no loop."""
        _check_options("stream", options)
        return LLMStream(self, prompt, system, self._model(model), options, memory, to)

    async def run(
        self,
        prompt: Messages,
        *,
        tools: Sequence[Tool | Callable[..., Any]],
        system: str | None = None,
        model: str | None = None,
        max_turns: int = 8,
        memory: Memory | None = None,
        output: type[BaseModel] | None = None,
        repair: int = 1,
        **options: Any,
    ) -> Reply:
        """The tool loop: the model calls tools, sees their results, and goes on until it answers in text.

        A tool that raises, or arguments that do not fit its schema, go back to the model as the tool's
        result (and into the trace), so it can correct itself. More than `max_turns` turns: TurnLimitError.

        With `output` (a Pydantic model), the final answer is that model, in `reply.output`: a text answer
        that already validates is taken as it is; otherwise the model is asked once more, with the JSON
        Schema as `response_format` and no tools, and repaired as `structured` repairs (`repair` times)."""
        _check_options("run", options)
        if output is not None:
            _check_output(output, repair)
        resolved = [as_tool(t).resolve(self._caller) for t in tools]
        by_name = {t.name: t for t in resolved}
        if len(by_name) != len(resolved):
            raise ToolError("two tools share a name; pass name=... to tell them apart")
        specs = [t.spec() for t in resolved]
        messages, fresh = await self._conversation(prompt, system, memory)
        start = len(messages)
        model = self._model(model)
        total = Usage()
        runs: list[ToolRun] = []
        for turn in range(1, max_turns + 1):
            response, usage = await self._complete("tools", model, messages, {"tools": specs, **options}, turn=turn)
            total.add(usage)
            message = response.choices[0].message
            calls = list(message.tool_calls or [])
            assistant: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
            if calls:
                assistant["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in calls
                ]
            messages.append(assistant)
            if not calls:
                text = message.content or ""
                remembered = messages[start:]
                parsed: BaseModel | None = None
                if output is not None:
                    answered = len(messages)
                    # Options such as temperature apply to the final answer too; tool_choice does not:
                    # that call offers no tools.
                    final_options = {k: v for k, v in options.items() if k not in _TOOL_OPTIONS}
                    parsed, text, usage = await self._parse_into(
                        output, model, messages, repair, final_options, answer=text
                    )
                    total.add(usage)
                    if len(messages) > answered:  # the model was asked again: remember the question and the answer
                        remembered = [*remembered, messages[answered], {"role": "assistant", "content": text}]
                if memory is not None:
                    await memory.append(*fresh, *remembered)
                return Reply(text, model, messages, total, self._client.cost(model, total), runs, turn, output=parsed)
            for call in calls:
                run = await self._run_tool(by_name, call.id, call.function.name, call.function.arguments)
                runs.append(run)
                content = result_text(run.result) if run.error is None else f"error: {run.error}"
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        raise TurnLimitError(max_turns, messages)

    # -- internals ----------------------------------------------------------------------------------

    async def _parse_into(
        self,
        output: type[M],
        model: str,
        messages: list[dict[str, Any]],
        repair: int,
        options: dict[str, Any],
        *,
        answer: str | None = None,
    ) -> tuple[M, str, Usage]:
        """Ask for a reply in `output`'s JSON Schema and validate it, sending the errors back at most `repair`
        times. With `answer` (the text a tool loop ended on), that text is tried first and the model is
        asked only if it does not validate. Appends to `messages` what was said, the valid reply included."""
        total = Usage()
        if answer is not None:
            try:
                return output.model_validate_json(_unfenced(answer)), answer, total
            except ValidationError:
                pass  # prose, most likely: the model was not told the schema during the loop
            messages.append(
                {
                    "role": "user",
                    "content": "Now give your final answer as a JSON object that matches the required JSON schema, "
                    "and nothing else.",
                }
            )
        text = errors = ""
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(output), "schema": output.model_json_schema()},
        }
        for attempt in range(repair + 1):
            response, usage = await self._complete(
                "structured", model, messages, {"response_format": response_format, **options}, attempt=attempt
            )
            total.add(usage)
            text = _text(response)
            messages.append({"role": "assistant", "content": text})
            try:
                return output.model_validate_json(_unfenced(text)), text, total
            except ValidationError as exc:
                errors = _validation_errors(exc)
            if attempt < repair:
                messages.append(
                    {
                        "role": "user",
                        "content": f"That reply does not match the required JSON schema: {errors}. "
                        "Answer again with only the corrected JSON object.",
                    }
                )
        raise StructuredOutputError(output, text, errors)

    def _model(self, model: str | None) -> str:
        chosen = model or self.settings.model
        if not chosen:
            raise LLMError(
                "no model to call: pass model=..., or set model under [llm] in stepline.toml "
                "(or the STEPLINE_LLM_MODEL environment variable)"
            )
        return chosen

    async def _conversation(
        self, prompt: Messages, system: str | None, memory: Memory | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The messages to send, and the new ones among them (what memory keeps)."""
        fresh = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        history = await memory.messages() if memory is not None else []
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *history, *fresh], fresh

    async def _complete(
        self, kind: str, model: str, messages: list[dict[str, Any]], options: dict[str, Any], **extra: Any
    ) -> tuple[Any, Usage]:
        """One model call. In a run (an event or cron step) it is a memoized step: a retried or resumed run
        gets the recorded response back instead of calling the model again."""
        run = self._ctx.run
        if run is None:
            return await self._call(kind, model, messages, options, **extra)

        async def call() -> Any:
            return (await self._call(kind, model, messages, options, **extra))[0]

        response, replayed = await run.memo("llm", None, call, _dump_response, _load_response)
        if replayed:
            self._record(
                TraceRecord(
                    self._ctx.trace_id,
                    "llm",
                    self._ctx.step_name,
                    time.time(),
                    {"call": kind, "model": model, "status": "ok", "replayed": True, "reply": _clip(_text(response))},
                )
            )
        return response, _usage(response)

    async def _call(
        self, kind: str, model: str, messages: list[dict[str, Any]], options: dict[str, Any], **extra: Any
    ) -> tuple[Any, Usage]:
        started = time.time()
        retries = 0
        try:
            response, retries = await self._client.create(model=model, messages=messages, **options)
        except LLMError as exc:
            self._trace(kind, model, messages, started, retries=exc.retries, error=str(exc), **extra)
            raise
        usage = _usage(response)
        message = response.choices[0].message if response.choices else None
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in (getattr(message, "tool_calls", None) or [])
        ]
        self._trace(
            kind,
            model,
            messages,
            started,
            retries=retries,
            usage=usage,
            reply=(message.content if message is not None else None),
            tool_calls=calls,
            **extra,
        )
        return response, usage

    def _trace(
        self,
        kind: str,
        model: str,
        messages: list[dict[str, Any]],
        started: float,
        *,
        retries: int = 0,
        usage: Usage | None = None,
        reply: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        data: dict[str, Any] = {
            "call": kind,
            "model": model,
            "messages": [_clipped(m) for m in self._client.redact(messages)],
            "latency_ms": round((time.time() - started) * 1000, 2),
            "retries": retries,
            "status": "error" if error else "ok",
            **extra,
        }
        if usage is not None:
            data |= {
                "tokens_in": usage.input_tokens,
                "tokens_out": usage.output_tokens,
                "cost": self._client.cost(model, usage),
            }
        if reply is not None:
            data["reply"] = _clip(reply)
        if tool_calls:
            data["tool_calls"] = tool_calls
        if error:
            data["error"] = error
        self._record(TraceRecord(self._ctx.trace_id, "llm", self._ctx.step_name, started, data))

    async def _run_tool(self, tools: dict[str, Tool], call_id: str, name: str, raw_arguments: str) -> ToolRun:
        """One tool call. In a run it is a memoized step: a retried or resumed run does not run it again."""
        run = self._ctx.run
        if run is None:
            return await self._invoke_tool(tools, call_id, name, raw_arguments)
        done, _ = await run.memo(
            "tool", None, lambda: self._invoke_tool(tools, call_id, name, raw_arguments), _dump_tool, _load_tool
        )
        tool_run: ToolRun = done
        return tool_run

    async def _invoke_tool(self, tools: dict[str, Tool], call_id: str, name: str, raw_arguments: str) -> ToolRun:
        from stepline import _json

        started = time.time()
        run = ToolRun(call_id, name, {})
        tool = tools.get(name)
        try:
            if tool is None or tool.invoke is None:
                raise ToolArgumentsError(f"there is no tool named {name!r}; the tools are {', '.join(tools)}")
            try:
                arguments = _json.loads(raw_arguments or "{}")
            except ValueError:
                raise ToolArgumentsError(f"the arguments are not JSON: {raw_arguments[:200]}") from None
            if not isinstance(arguments, dict):
                raise ToolArgumentsError("the arguments must be a JSON object")
            run.arguments = arguments
            if tool.needs_approval:
                decided = await self._approved(tool, call_id, arguments)
                if decided is not None:
                    raise ToolRefused(decided)
            run.result = await tool.invoke(arguments, self._ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the model sees what went wrong and may try again
            known = isinstance(exc, ToolArgumentsError | ToolRefused)
            run.error = str(exc) if known else f"{type(exc).__name__}: {exc}"
        data: dict[str, Any] = {
            "tool": name,
            "kind": tool.kind if tool else None,
            "call_id": call_id,
            "arguments": run.arguments,
            "duration_ms": round((time.time() - started) * 1000, 2),
            "status": "error" if run.error else "ok",
        }
        data |= {"error": run.error} if run.error else {"result": _clip(result_text(run.result))}
        self._record(TraceRecord(self._ctx.trace_id, "tool", self._ctx.step_name, started, data))
        return run

    async def _approved(self, tool: Tool, call_id: str, arguments: dict[str, Any]) -> str | None:
        """Ask a person before a tool that needs approval runs: the run suspends until the decision. None when
        it is approved; else why not, for the model."""
        ctx = self._ctx
        if ctx.run is None:
            return (
                f"tool {tool.name} needs a person's approval, and only an event or cron step can wait for one "
                "(an API step's caller is waiting): run this agent in an event step"
            )
        from stepline.agents.approvals import Approvals

        approval = await Approvals(ctx).ask(
            f"tool.{tool.name}",
            f"{ctx.run.id}.{call_id}",
            data={"tool": tool.name, "arguments": arguments},
            message=f"The agent of step {ctx.step_name} wants to call {tool.name}",
            timeout=tool.approval_timeout,
        )
        if approval.approved:
            return None
        if approval.status == "timeout":
            return f"no one approved this call of {tool.name} in time; it was not made"
        why = f": {approval.comment}" if approval.comment else ""
        return f"a person rejected this call of {tool.name}{why}; it was not made"


class ToolRefused(Exception):
    """A tool call a person did not approve: what the model reads instead of a result."""


def _dump_response(response: Any) -> Any:
    return response.model_dump(mode="json", exclude_unset=True)


def _load_response(value: Any) -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(value)


def _dump_tool(run: ToolRun) -> dict[str, Any]:
    from stepline import _json

    try:
        result = _json.loads(_json.dumps(run.result))
    except Exception:  # a tool's result that is not JSON: the model read its text, and so will a replay
        result = result_text(run.result) if run.error is None else None
    return {"id": run.id, "name": run.name, "arguments": run.arguments, "result": result, "error": run.error}


def _load_tool(value: dict[str, Any]) -> ToolRun:
    return ToolRun(value["id"], value["name"], value.get("arguments") or {}, value.get("result"), value.get("error"))


class StreamTarget(Protocol):
    """Where ctx.llm.stream(..., to=) writes the text as it grows: a stream item (core.streams.StreamItem)."""

    async def write(self, text: str, done: bool) -> None: ...


# How often a growing reply is written to its stream item, at most (seconds): 20 writes a second looks live
# and keeps a fast model from making a stored change per token.
STREAM_EVERY = 0.05


class LLMStream:
    """An async iterator of text pieces; records the call in the trace when the stream ends."""

    def __init__(
        self,
        llm: LLM,
        prompt: Messages,
        system: str | None,
        model: str,
        options: dict[str, Any],
        memory: Memory | None = None,
        to: StreamTarget | None = None,
    ) -> None:
        self._llm = llm
        self._prompt = prompt
        self._system = system
        self.model = model
        self._options = options
        self._memory = memory
        self._to = to
        self.text = ""
        self.usage = Usage()

    async def collect(self) -> str:
        """Read the whole stream (writing it to `to` as it comes); the text."""
        async for _ in self:
            pass
        return self.text

    async def __aiter__(self) -> AsyncIterator[str]:
        llm = self._llm
        messages, fresh = await llm._conversation(self._prompt, self._system, self._memory)
        started = time.time()
        request = {"stream": True, "stream_options": {"include_usage": True}, **self._options}
        try:
            stream, retries = await llm._client.create(model=self.model, messages=messages, **request)
        except LLMError as exc:
            llm._trace("stream", self.model, messages, started, retries=exc.retries, error=str(exc))
            raise
        pieces: list[str] = []
        error: str | None = None
        written = 0.0  # when the text so far last went to `to`
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    self.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                for choice in chunk.choices:
                    piece = choice.delta.content
                    if piece:
                        pieces.append(piece)
                        # Each write is a stored change: at most one per STREAM_EVERY seconds while it grows
                        # (the last piece always goes, with done=True, below).
                        if self._to is not None and time.monotonic() - written >= STREAM_EVERY:
                            written = time.monotonic()
                            await self._to.write("".join(pieces), False)
                        yield piece
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.text = "".join(pieces)
            llm._trace(
                "stream", self.model, messages, started, retries=retries, usage=self.usage, reply=self.text, error=error
            )
        if self._to is not None:
            await self._to.write(self.text, True)
        # Only a stream read to its end is remembered: a reader that stopped early never saw the whole reply.
        if self._memory is not None:
            await self._memory.append(*fresh, {"role": "assistant", "content": self.text})


# -- helpers -------------------------------------------------------------------------------------------

# Options a call sets itself, or that would make it drop part of the reply: refused with what to use instead.
_TOOL_OPTIONS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")
_TOOLS_ELSEWHERE = "tools run in the tool loop: use ctx.llm.run(prompt, tools=[...])"
_RESERVED: dict[str, dict[str, str]] = {
    "chat": {
        **dict.fromkeys(_TOOL_OPTIONS, _TOOLS_ELSEWHERE),
        **dict.fromkeys(("stream", "stream_options"), "for text as it arrives, use ctx.llm.stream(...)"),
    },
    "structured": {
        **dict.fromkeys(
            _TOOL_OPTIONS,
            "for structured output after tool calls, use ctx.llm.run(prompt, tools=[...], output=Model)",
        ),
        "response_format": "structured sends the output model's JSON Schema as response_format itself",
        **dict.fromkeys(("stream", "stream_options"), "structured validates the whole reply; it does not stream"),
    },
    "stream": {
        **dict.fromkeys(
            _TOOL_OPTIONS,
            "a stream yields text and would lose the model's tool calls; use ctx.llm.run(prompt, tools=[...]), "
            "which runs the tools and answers once the model is done",
        ),
        **dict.fromkeys(("stream", "stream_options"), "stream sets it itself"),
    },
    "run": {
        **dict.fromkeys(("functions", "function_call"), "pass the tools as tools=[...]"),
        "response_format": "for a final answer in a Pydantic model, pass output=Model",
        **dict.fromkeys(("stream", "stream_options"), "the tool loop needs whole replies; it does not stream"),
    },
}
_OWN: dict[str, tuple[str, ...]] = {
    "chat": ("system", "model", "memory"),
    "structured": ("system", "model", "repair", "memory"),
    "stream": ("system", "model", "memory"),
    "run": ("tools", "system", "model", "max_turns", "memory", "output", "repair"),
}


@functools.cache
def _endpoint_options() -> frozenset[str]:
    """What `chat.completions.create` takes besides the messages and the model, from the installed client."""
    import inspect

    from openai.resources.chat.completions import AsyncCompletions

    names = inspect.signature(AsyncCompletions.create).parameters
    return frozenset(names) - {"self", "messages", "model"}


def _check_options(call: str, options: dict[str, Any]) -> None:
    """Refuse, before anything is sent, what the openai client would reject with a bare TypeError
    (a misspelt keyword) or what this call cannot honour (tools on a stream)."""
    for name in options:
        reason = _RESERVED[call].get(name)
        if reason is not None:
            raise LLMUsageError(f"ctx.llm.{call}(..., {name}=...) is not accepted: {reason}")
        if name not in _endpoint_options():
            known = [*_OWN[call], *sorted(_endpoint_options())]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}=...? " if close else ""
            raise LLMUsageError(
                f"ctx.llm.{call}() got an unknown keyword {name!r}: {hint}it takes {', '.join(_OWN[call])} and "
                "the endpoint's options (temperature, max_tokens, seed, ...); send a provider's own field "
                "in extra_body={...}"
            )


def _check_output(output: Any, repair: int) -> None:
    if not (isinstance(output, type) and issubclass(output, BaseModel)):
        raise LLMUsageError(f"output must be a Pydantic model class (class Answer(BaseModel): ...), not {output!r}")
    if repair < 0:
        raise LLMUsageError("repair is how many times a bad reply is sent back: 0 or more")


def _validation_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors())


def _function_call(call: Any) -> dict[str, str]:
    return {"name": call.function.name, "arguments": call.function.arguments}


def _text(response: Any) -> str:
    if not response.choices:
        raise LLMError("the endpoint answered with no choices")
    return str(response.choices[0].message.content or "")


def _usage(response: Any) -> Usage:
    usage = getattr(response, "usage", None)
    if usage is None:
        return Usage()
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)


def _unfenced(text: str) -> str:
    # Models asked for JSON still wrap it in ```json fences now and then.
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return match.group(1) if match else text


def _schema_name(model: type[BaseModel]) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64]


def _clip(text: str) -> str:
    return text if len(text) <= _TRACE_TEXT_LIMIT else text[:_TRACE_TEXT_LIMIT] + f"... [{len(text)} characters]"


def _clipped(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    return {**message, "content": _clip(content)} if isinstance(content, str) else dict(message)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"the LLM endpoint answered {status}: {exc}" if status else f"the LLM endpoint could not be reached: {exc}"


def _advice(exc: Any, settings: LLMSettings) -> str:
    status = exc.status_code
    hint = {
        401: f"the key was refused; set {settings.api_key_env} (or llm.api_key_env in stepline.toml)",
        403: "the key may not use this model or endpoint",
        404: f"check the model name and llm.base_url ({settings.base_url})",
        400: "the endpoint rejected the request (an unsupported option, or messages it cannot read)",
    }.get(status, "see the message above")
    return f"the LLM endpoint answered {status}: {exc.message}; {hint}"
