"""A real OpenAI-compatible HTTP server that answers from a script: test agents without a network or a model.

    with ScriptedLLM(
        Answer.tool_call("add", {"a": 2, "b": 3}),
        "The sum is 5.",
    ) as llm:
        app = Stepline(root, llm=llm.settings(model="scripted"))
        ...
        assert llm.requests[1]["messages"][-1]["role"] == "tool"

It serves `POST /v1/chat/completions` on 127.0.0.1 (a free port) from a thread, speaks JSON and, when a
request asks for `stream`, server-sent events chunk by chunk, tool-call deltas included. Each request
takes the next answer; an answer may be a function of the request, for replies that depend on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from stepline.steps.settings import LLMSettings


@dataclass
class Answer:
    """One scripted response: text, tool calls, or an HTTP error (with `Retry-After`, for 429s)."""

    text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    error: str | None = None
    retry_after: float | None = None
    usage: tuple[int, int] | None = None  # (input, output) tokens; counted from words when None
    delay: float = 0.0  # seconds before answering
    pace: float = 0.0  # seconds between streamed pieces, as a model generating them

    @classmethod
    def tool_call(cls, name: str, arguments: dict[str, Any] | str, **kw: Any) -> Answer:
        return cls.tool_calls_of([(name, arguments)], **kw)

    @classmethod
    def tool_calls_of(cls, calls: list[tuple[str, dict[str, Any] | str]], **kw: Any) -> Answer:
        made = [
            {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)} for name, args in calls
        ]
        return cls(tool_calls=made, **kw)

    @classmethod
    def failure(cls, status: int, message: str = "scripted error", retry_after: float | None = None) -> Answer:
        return cls(status=status, error=message, retry_after=retry_after)


Script = Answer | str | Callable[[dict[str, Any]], "Answer | str"]


class ScriptedLLM:
    """The server. Use it as a context manager (or call `start` and `stop`)."""

    def __init__(self, *script: Script, model: str = "scripted") -> None:
        self._script: list[Script] = list(script)
        self.model = model
        self.requests: list[dict[str, Any]] = []  # every request body received, in order
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- the script ---------------------------------------------------------------------------------

    def add(self, *script: Script) -> None:
        with self._lock:
            self._script.extend(script)

    @property
    def remaining(self) -> int:
        return len(self._script)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def settings(self, **overrides: Any) -> LLMSettings:
        """Settings that point `ctx.llm` here (no retry delay, so retry tests run fast)."""
        values: dict[str, Any] = {"base_url": self.base_url, "model": self.model, "retry_base_delay": 0.0}
        return LLMSettings(**(values | overrides))

    # -- the server ---------------------------------------------------------------------------------

    def start(self) -> ScriptedLLM:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the scripted LLM server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            item = self._script.pop(0) if self._script else None
        if item is None:
            return _error(500, f"the script has no answer left for request {len(self.requests)}")
        answer = item(body) if callable(item) else item
        if isinstance(answer, str):
            answer = Answer(text=answer)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.status != 200:
            headers = {"retry-after": str(answer.retry_after)} if answer.retry_after is not None else None
            return _error(answer.status, answer.error or "scripted error", headers)
        usage = answer.usage or (_words(body.get("messages", [])), _words([{"content": answer.text or ""}]))
        model = body.get("model", self.model)
        ident = f"chatcmpl-{next(self._ids)}"
        if body.get("stream"):
            return StreamingResponse(self._chunks(ident, model, answer, usage), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{next(self._ids)}", "type": "function", "function": call} for call in answer.tool_calls
            ]
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if answer.tool_calls else "stop",
                    }
                ],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
            }
        )

    async def _chunks(self, ident: str, model: str, answer: Answer, usage: tuple[int, int]) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
            payload = {"id": ident, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices}
            return "data: " + json.dumps(payload | extra) + "\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for piece in _pieces(answer.text or ""):
            yield chunk({"content": piece})
            await asyncio.sleep(answer.pace)
        for index, call in enumerate(answer.tool_calls):
            head = {"index": index, "id": f"call_{next(self._ids)}", "type": "function"}
            yield chunk({"tool_calls": [head | {"function": {"name": call["name"], "arguments": ""}}]})
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": call["arguments"]}}]})
        yield chunk({}, "tool_calls" if answer.tool_calls else "stop")
        total = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
        yield chunk({}, usage=total)
        yield "data: [DONE]\n\n"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status, headers=headers)


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in messages)


def _pieces(text: str) -> list[str]:
    """Word by word, spaces kept, as a model streams tokens."""
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words) if w or i < len(words) - 1]
