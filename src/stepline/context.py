"""`ctx` as handlers get it: the engine's RunContext (emit, state, logger) and the agent features,
`ctx.llm`, `ctx.approvals` and `ctx.run_code`, with their blocking twins for sync handlers.

The app builds one per run through the engine's context factory (`Stepline._context`), so that the
engine itself knows nothing of models, approvals or the code sandbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from stepline._clock import SYSTEM_CLOCK, Clock
from stepline._errors import LLMUsageError
from stepline.adapters.base import StateStore, TraceRecord
from stepline.agents.approvals import Approval, Approvals
from stepline.agents.llm import LLM, LLMClient, Messages, Reply
from stepline.agents.memory import Memory, Policy
from stepline.agents.sandbox import CodeResult, run_code
from stepline.agents.tools import Tool
from stepline.core.context import Blocking, Emitter, Recorder, RunContext, State, StepCaller, StepLogger, SyncRunContext
from stepline.core.durable import Run
from stepline.core.streams import Hub, StreamHandle, Streams
from stepline.steps.settings import LLMSettings

M = TypeVar("M", bound=BaseModel)


class Context(RunContext):
    """The second argument of every handler (the only one of a cron handler)."""

    def __init__(
        self,
        *,
        step: str,
        trace_id: str,
        flows: list[str],
        emitter: Emitter,
        state: State,
        control: StateStore,
        logger: StepLogger,
        record: Recorder,
        clock: Clock = SYSTEM_CLOCK,
        client: LLMClient | None = None,
        caller: StepCaller | None = None,
        run: Run | None = None,
        streams: Hub | None = None,
    ) -> None:
        super().__init__(
            step=step,
            trace_id=trace_id,
            flows=flows,
            emitter=emitter,
            state=state,
            logger=logger,
            record=record,
            clock=clock,
            control=control,
            run=run,
        )
        self._client = client
        self._caller = caller
        self._llm: LLM | None = None
        self._hub = streams

    @property
    def streams(self) -> Streams:
        """The project's streams: `await ctx.streams.progress.set(group_id, id, item)` (docs/streams.md)."""
        return Streams(self._hub)

    @property
    def approvals(self) -> Approvals:
        """Ask a person for a decision and wait for it durably (see docs/agents.md)."""
        return Approvals(self)

    async def run_code(
        self,
        code: str,
        *,
        timeout: float = 10.0,
        memory: int = 256 * 1024 * 1024,
        stdin: str = "",
        files: dict[str, str] | None = None,
    ) -> CodeResult:
        """Run Python in a separate, limited process (see docs/agents.md for what it bounds and what not)."""
        started = self.clock.time()
        result = await run_code(code, timeout=timeout, memory=memory, stdin=stdin, files=files)
        self._record(
            TraceRecord(
                self.trace_id,
                "code",
                self.step_name,
                started,
                {
                    "code": code[:20_000],
                    "exit_code": result.exit_code,
                    "killed_by": result.killed_by,
                    "duration_ms": round(result.duration * 1000, 2),
                    "stdout": result.stdout[:2000],
                    "stderr": result.stderr[-2000:],
                },
            )
        )
        return result

    @property
    def llm(self) -> LLM:
        """The chat client of this step (see docs/agents.md), made on first use."""
        if self._llm is None:
            if self._client is None or self._caller is None:
                raise RuntimeError("this context has no LLM client (it was built outside an app)")
            self._llm = LLM(self._client, self._caller, self, self._record)
        return self._llm

    def sync(self, loop: asyncio.AbstractEventLoop) -> SyncContext:
        return SyncContext(self, loop)


class SyncLLM(Blocking):
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


class SyncApprovals(Blocking):
    """`ctx.approvals` in a sync handler, blocking."""

    def __init__(self, approvals: Approvals, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._approvals = approvals

    def request(self, name: str, key: str, *, topic: str, **kw: Any) -> Approval:
        return self._run(self._approvals.request(name, key, topic=topic, **kw))

    def ask(self, name: str, key: str, **kw: Any) -> Approval:
        return self._run(self._approvals.ask(name, key, **kw))

    def decide(self, name: str, key: str, *, approved: bool, **kw: Any) -> Approval | None:
        return self._run(self._approvals.decide(name, key, approved=approved, **kw))

    def settle(self, event: dict[str, Any]) -> Approval | None:
        return self._run(self._approvals.settle(event))

    def get(self, name: str, key: str) -> Approval | None:
        return self._run(self._approvals.get(name, key))

    def pending(self, name: str | None = None) -> list[Approval]:
        return self._run(self._approvals.pending(name))


class SyncStream(Blocking):
    """`ctx.streams.<name>` in a sync handler, blocking."""

    def __init__(self, handle: StreamHandle, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._handle = handle

    def set(self, group_id: str, id: str, data: Any) -> dict[str, Any]:
        return self._run(self._handle.set(group_id, id, data))

    def get(self, group_id: str, id: str) -> dict[str, Any] | None:
        return self._run(self._handle.get(group_id, id))

    def delete(self, group_id: str, id: str) -> dict[str, Any] | None:
        return self._run(self._handle.delete(group_id, id))

    def get_group(self, group_id: str) -> list[dict[str, Any]]:
        return self._run(self._handle.get_group(group_id))

    getGroup = get_group

    def send(self, channel: dict[str, Any], event: dict[str, Any]) -> None:
        self._run(self._handle.send(channel, event))


class SyncStreams:
    """`ctx.streams` in a sync handler: each stream's calls, blocking."""

    def __init__(self, streams: Streams, loop: asyncio.AbstractEventLoop) -> None:
        self._streams = streams
        self._loop = loop

    def __getattr__(self, name: str) -> SyncStream:
        if name.startswith("__"):
            raise AttributeError(name)
        return SyncStream(self._streams[name], self._loop)

    def __getitem__(self, name: str) -> SyncStream:
        return SyncStream(self._streams[name], self._loop)


class SyncContext(SyncRunContext):
    """`ctx` in a sync handler: the same API, blocking."""

    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(ctx, loop)
        self._agent_ctx = ctx

    @property
    def approvals(self) -> SyncApprovals:
        return SyncApprovals(self._agent_ctx.approvals, self._loop)

    def run_code(self, code: str, **kw: Any) -> CodeResult:
        return self._run(self._agent_ctx.run_code(code, **kw))

    @property
    def llm(self) -> SyncLLM:
        return SyncLLM(self._agent_ctx.llm, self._loop)

    @property
    def streams(self) -> SyncStreams:
        return SyncStreams(self._agent_ctx.streams, self._loop)
