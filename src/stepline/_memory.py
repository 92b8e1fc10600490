"""Conversation memory for agents, kept in state so it is as durable as the engine it runs on.

`ctx.llm.conversation()` is short-term memory, one per trace (a request's whole journey shares it);
`ctx.llm.memory("customer-42")` is long-term memory under a key of a named state group. Both grow by
the messages of each call made with `memory=` and keep to a size policy: "truncate" drops the oldest
messages, "summarize" asks the model to fold them into one summary message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._context import State
    from ._llm import LLM

Policy = Literal["truncate", "summarize"]
CONVERSATIONS = "llm.conversations"  # the state group of trace-scoped memory

_SUMMARY_PREFIX = "Summary of the earlier conversation: "


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
        llm: LLM | None = None,
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
        kept = await self.messages() + [dict(m) for m in messages]
        if len(kept) > self.max_messages:
            kept = await self._shrink(kept)
        await self._state.set(self.group, self.key, kept)

    async def clear(self) -> None:
        await self._state.delete(self.group, self.key)

    async def _shrink(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = self.max_messages - (1 if self.policy == "summarize" else 0)
        cut = _safe_cut(messages, len(messages) - keep)
        older, recent = messages[:cut], messages[cut:]
        if self.policy == "truncate" or self._llm is None or not older:
            return recent
        transcript = "\n".join(f"{m.get('role')}: {m.get('content') or ''}" for m in older)
        reply = await self._llm.chat(
            transcript,
            system="Summarize this conversation in a few sentences, keeping every fact, name, number and "
            "decision a later answer may need.",
        )
        return [{"role": "system", "content": _SUMMARY_PREFIX + reply.text}, *recent]


def _safe_cut(messages: list[dict[str, Any]], cut: int) -> int:
    """Move the cut forward past tool results: a tool message whose call was dropped is refused by the API."""
    cut = max(cut, 0)
    while cut < len(messages) and messages[cut].get("role") == "tool":
        cut += 1
    return cut
