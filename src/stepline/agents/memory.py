"""Conversation memory for agents, kept in state so it is as durable as the engine it runs on.

`ctx.llm.conversation()` is short-term memory, one per trace (a request's whole journey shares it);
`ctx.llm.memory("customer-42")` is long-term memory under a key of a named state group. Both grow by
the messages of each call made with `memory=` and keep to a size policy: "truncate" drops the oldest
messages, "summarize" asks the model to fold them into one summary message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stepline._errors import LLMError, MemoryConflictError

if TYPE_CHECKING:
    from stepline.core.context import State, StepLogger

Policy = Literal["truncate", "summarize"]
CONVERSATIONS = "conversations"  # the group of trace-scoped memory, in the store's control state

_SUMMARY_PREFIX = "Summary of the earlier conversation: "
_ATTEMPTS = 200  # compare-and-set attempts per write; each conflict means another writer succeeded


class _Text(Protocol):
    @property
    def text(self) -> str: ...


class Summarizer(Protocol):
    """What the "summarize" policy needs of `ctx.llm`: one chat call, and a logger to report a failed one."""

    @property
    def logger(self) -> StepLogger: ...

    async def chat(self, prompt: str, *, system: str | None = None) -> _Text: ...


class Memory:
    """A list of chat messages under (group, key) in state, bounded by `max_messages`."""

    def __init__(
        self,
        state: State,
        group: str,
        key: str,
        *,
        max_messages: int = 40,
        policy: Policy = "truncate",
        llm: Summarizer | None = None,
    ) -> None:
        if max_messages < 2:
            raise ValueError("max_messages must be at least 2 (a question and its answer)")
        if policy not in ("truncate", "summarize"):
            raise ValueError(f'policy must be "truncate" or "summarize", not {policy!r}')
        self._state = state
        self.group = group
        self.key = key
        self.max_messages = max_messages
        self.policy = policy
        self._llm = llm

    async def messages(self) -> list[dict[str, Any]]:
        stored = await self._state.get(self.group, self.key)
        return list(stored) if isinstance(stored, list) else []

    async def append(self, *messages: dict[str, Any]) -> None:
        """Add messages at the end, atomically: steps of one trace (or requests for one customer) that
        append at once all keep their messages. Each write is a compare-and-set that is tried again on
        the value another writer left; the model call of "summarize" happens outside that retry."""
        added = [dict(m) for m in messages]
        if not added:
            return
        await self._update(
            lambda kept: self._truncated([*kept, *added]) if self.policy == "truncate" else [*kept, *added]
        )
        if self.policy == "summarize":
            await self._summarize()

    async def clear(self) -> None:
        await self._state.delete(self.group, self.key)

    # -- internals --------------------------------------------------------------------------------------

    async def _update(self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        for attempt in range(_ATTEMPTS):
            stored = await self._state.get(self.group, self.key)
            current = list(stored) if isinstance(stored, list) else []
            # Expected None: the key is missing (compare_and_set's convention); a non-list is overwritten.
            if await self._state.compare_and_set(self.group, self.key, stored, change(current)):
                return
            await _back_off(attempt)
        raise MemoryConflictError(self.group, self.key, _ATTEMPTS)

    def _truncated(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(messages) <= self.max_messages:
            return messages
        return messages[_safe_cut(messages, len(messages) - self.max_messages) :]

    async def _summarize(self) -> None:
        """Fold the oldest messages into one summary once the memory is over its size.

        The summary is asked for outside the compare-and-set, and what it summarises is a prefix of the list.
        Writers that append meanwhile only add to the end, so on a conflict the same summary still replaces
        the same prefix: the model is asked again only if another writer has summarised that prefix first
        (then what is left is measured afresh). Until this write lands, the list may hold a few messages
        more than max_messages."""
        summarized: tuple[list[dict[str, Any]], dict[str, Any]] | None = None  # (the prefix, its summary)
        for attempt in range(_ATTEMPTS):
            stored = await self._state.get(self.group, self.key)
            current = list(stored) if isinstance(stored, list) else []
            if len(current) <= self.max_messages:
                return
            if self._llm is None:  # no model to summarise with (a Memory built by hand): keep the newest
                await self._update(self._truncated)
                return
            if summarized is not None and current[: len(summarized[0])] == summarized[0]:
                older, summary = summarized
            else:
                cut = _safe_cut(current, len(current) - (self.max_messages - 1))
                older = current[:cut]
                if not older:
                    return
                transcript = "\n".join(f"{m.get('role')}: {m.get('content') or ''}" for m in older)
                try:
                    reply = await self._llm.chat(
                        transcript,
                        system="Summarize this conversation in a few sentences, keeping every fact, name, number "
                        "and decision a later answer may need.",
                    )
                except LLMError as exc:
                    # The new messages are stored already: failing the step now would only have it retried
                    # and its messages stored twice. The memory stays long until a later write summarises it.
                    self._llm.logger.warn(
                        "memory not summarised; it keeps every message until a later write",
                        group=self.group,
                        key=self.key,
                        error=str(exc),
                    )
                    return
                summary = {"role": "system", "content": _SUMMARY_PREFIX + reply.text}
                summarized = (older, summary)
            if await self._state.compare_and_set(self.group, self.key, stored, [summary, *current[len(older) :]]):
                return
            await _back_off(attempt)
        raise MemoryConflictError(self.group, self.key, _ATTEMPTS)


async def _back_off(attempt: int) -> None:
    # A little random wait, so that writers that collided do not collide again in lockstep.
    await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))


def _safe_cut(messages: list[dict[str, Any]], cut: int) -> int:
    """Move the cut forward past tool results: a tool message whose call was dropped is refused by the API."""
    cut = max(cut, 0)
    while cut < len(messages) and messages[cut].get("role") == "tool":
        cut += 1
    return cut
