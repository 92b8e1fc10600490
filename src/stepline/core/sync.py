"""`ctx` for sync handlers: the same API with blocking methods, run on the engine's loop from a worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from stepline.agents.approvals import Approval, Approvals
from stepline.agents.llm import LLM, LLMUsageError, Messages, Reply
from stepline.agents.memory import Memory, Policy
from stepline.agents.sandbox import CodeResult
from stepline.agents.tools import Tool
from stepline.core.context import Context, State
from stepline.steps.settings import LLMSettings

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class _Blocking:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: the handler outlived its engine (a timeout abandoned it)
            coro.close()
            raise EngineStoppedError() from None
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if not self._loop.is_running():  # it will never run: do not hang this thread for ever
                    future.cancel()
                    raise EngineStoppedError() from None


class EngineStoppedError(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "the engine stopped while this sync handler ran (it was abandoned after its timeout, "
            "or the process is shutting down); its ctx can no longer be used"
        )


class SyncState(_Blocking):
    def __init__(self, state: State, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._state = state

    def get(self, group: str, key: str) -> Any:
        return self._run(self._state.get(group, key))

    def set(self, group: str, key: str, value: Any) -> Any:
        return self._run(self._state.set(group, key, value))

    def increment(self, group: str, key: str, by: int | float = 1) -> int | float:
        return self._run(self._state.increment(group, key, by))

    def merge(self, group: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._run(self._state.merge(group, key, fields))

    def compare_and_set(self, group: str, key: str, expected: Any, new: Any) -> bool:
        return self._run(self._state.compare_and_set(group, key, expected, new))

    def delete(self, group: str, key: str) -> bool:
        return self._run(self._state.delete(group, key))

    def get_group(self, group: str) -> list[Any]:
        return self._run(self._state.get_group(group))

    def items(self, group: str) -> dict[str, Any]:
        return self._run(self._state.items(group))

    def clear(self, group: str) -> int:
        return self._run(self._state.clear(group))


class SyncLLM(_Blocking):
    """`ctx.llm` in a sync handler: the same calls with the same parameters, blocking (streaming is for
    async handlers)."""

    def __init__(self, llm: LLM, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._llm = llm

    @property
    def settings(self) -> LLMSettings:
        return self._llm.settings

    def chat(
        self,
        prompt: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        memory: Memory | None = None,
        **options: Any,
    ) -> Reply:
        return self._run(self._llm.chat(prompt, system=system, model=model, memory=memory, **options))

    def structured(
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
        return self._run(
            self._llm.structured(prompt, output, system=system, model=model, repair=repair, memory=memory, **options)
        )

    def run(
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
        return self._run(
            self._llm.run(
                prompt,
                tools=tools,
                system=system,
                model=model,
                max_turns=max_turns,
                memory=memory,
                output=output,
                repair=repair,
                **options,
            )
        )

    def stream(self, prompt: Messages, **options: Any) -> Any:
        # Without this, a sync handler calling stream gets a bare AttributeError.
        raise LLMUsageError(
            "ctx.llm.stream needs an async handler (`async def handler(...)`, then `async for piece in "
            "ctx.llm.stream(...)`); in a sync handler, ctx.llm.chat returns the whole reply"
        )

    def conversation(self, *, max_messages: int = 40, policy: Policy = "truncate") -> Memory:
        return self._llm.conversation(max_messages=max_messages, policy=policy)

    def memory(self, key: str, *, group: str = "memory", max_messages: int = 40, policy: Policy = "truncate") -> Memory:
        return self._llm.memory(key, group=group, max_messages=max_messages, policy=policy)


class SyncApprovals(_Blocking):
    """`ctx.approvals` in a sync handler, blocking."""

    def __init__(self, approvals: Approvals, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._approvals = approvals

    def request(self, name: str, key: str, *, topic: str, **kw: Any) -> Approval:
        return self._run(self._approvals.request(name, key, topic=topic, **kw))

    def decide(self, name: str, key: str, *, approved: bool, **kw: Any) -> Approval | None:
        return self._run(self._approvals.decide(name, key, approved=approved, **kw))

    def settle(self, event: dict[str, Any]) -> Approval | None:
        return self._run(self._approvals.settle(event))

    def get(self, name: str, key: str) -> Approval | None:
        return self._run(self._approvals.get(name, key))

    def pending(self, name: str | None = None) -> list[Approval]:
        return self._run(self._approvals.pending(name))


class SyncContext(_Blocking):
    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._ctx = ctx
        self.step = ctx.step
        self.trace_id = ctx.trace_id
        self.flows = ctx.flows
        self.logger = ctx.logger
        self.state = SyncState(ctx.state, loop)

    @property
    def approvals(self) -> SyncApprovals:
        return SyncApprovals(self._ctx.approvals, self._loop)

    def run_code(self, code: str, **kw: Any) -> CodeResult:
        return self._run(self._ctx.run_code(code, **kw))

    @property
    def llm(self) -> SyncLLM:
        return SyncLLM(self._ctx.llm, self._loop)

    def emit(
        self,
        event: dict[str, Any] | str,
        data: Any = None,
        *,
        message_group_id: str | None = None,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> None:
        self._run(
            self._ctx.emit(event, data, message_group_id=message_group_id, delay=delay, idempotency_key=idempotency_key)
        )
