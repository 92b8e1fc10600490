"""`ctx.approvals`: a person decides, the flow waits for it (for hours, across restarts), or times out.

In one step, on a durable wait (docs/durable.md): the run suspends, holding no worker, until the decision:

    approval = await ctx.approvals.ask("report", report_id, data=draft, timeout=86400)
    if approval.approved: ...

Or across steps, with a decision topic of your own:

    # the step that proposes (it lists "report.decided" in its emits)
    await ctx.approvals.request("report", report_id, topic="report.decided", data=draft, timeout=86400)

    # the API step a person calls (it lists "report.decided" in its emits too)
    approval = await ctx.approvals.decide("report", report_id, approved=True, by="ada")

    # the step that acts on the decision (it subscribes to "report.decided")
    async def handler(input, ctx):
        approval = await ctx.approvals.settle(input)
        if approval is None:
            return  # a timeout that came after the decision: nothing to do
        if approval.approved: ...

The request is a record in the store's control state (group "approvals", apart from the user's state), so
it is as durable as the engine. The timeout is
an ordinary delayed event on the same topic; whichever of the decision and the timeout comes first
wins (compare-and-set on the record), and `settle` tells the late one to do nothing. The decision event
goes out in the trace of the request, so one trace shows the whole story.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from stepline._errors import ApprovalError, WaitTimeoutError
from stepline.steps.project import APPROVALS_TOPIC

if TYPE_CHECKING:
    from stepline.core.context import RunContext

GROUP = "approvals"
TOPIC = APPROVALS_TOPIC  # where `ask` hears of decisions (a topic every project waits for)
Status = Literal["pending", "approved", "rejected", "timeout"]


@dataclass
class Approval:
    name: str
    key: str
    topic: str
    status: Status
    trace_id: str
    step: str
    requested_at: float
    data: Any = None
    message: str | None = None
    expires_at: float | None = None
    decided_at: float | None = None
    by: str | None = None
    comment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Approval:
        return cls(**value)


def _id(name: str, key: str) -> str:
    if not name or not key or "/" in name:
        raise ApprovalError(f"an approval needs a name without '/' and a key; got {name!r} and {key!r}")
    return f"{name}/{key}"


class Approvals:
    """`ctx.approvals` of one step run."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    async def request(
        self,
        name: str,
        key: str,
        *,
        topic: str,
        data: Any = None,
        message: str | None = None,
        timeout: float | None = None,
    ) -> Approval:
        """Ask for a decision on (name, key). `topic` gets the decision, or `decision: "timeout"` after
        `timeout` seconds. Asking again while one is pending is an error; after a decision, it starts anew."""
        ctx = self._ctx
        approval = await self._record(name, key, topic, data, message, timeout)
        if timeout:
            await ctx.emit(
                topic,
                _event(approval, "timeout"),
                delay=timeout,
                idempotency_key=f"approval-timeout:{name}/{key}:{approval.requested_at}",
            )
        ctx.logger.info("approval requested", {"approval": f"{name}/{key}", "timeout": timeout})
        return approval

    async def ask(
        self,
        name: str,
        key: str,
        *,
        data: Any = None,
        message: str | None = None,
        timeout: float | None = None,
    ) -> Approval:
        """Ask for a decision on (name, key) and wait for it: the run suspends (its worker freed) until a person
        decides (`ctx.approvals.decide`, from an API step of the project), or `timeout` seconds pass (the
        approval then has status "timeout"). Only an event or cron step can wait; it resumes across restarts."""
        ctx = self._ctx
        if ctx.run is None:
            raise ApprovalError(
                "ask waits for the decision, and an API step cannot wait (its caller is waiting): ask from an event "
                "step, or use request() here and answer 202"
            )
        asked = await ctx.step(f"approval:{name}/{key}", self._ask, name, key, data, message, timeout)
        match = {"approval": {"name": name, "key": key}, "requested_at": asked["requested_at"]}
        try:
            await ctx.wait_for(TOPIC, match, timeout=timeout, name=f"approval-decision:{name}/{key}")
        except WaitTimeoutError:
            current = await self.get(name, key)
            if current is not None and current.pending and current.requested_at == asked["requested_at"]:
                timed_out = await self._time_out(current)
                if timed_out is not None:
                    ctx.logger.info("approval timed out", {"approval": f"{name}/{key}"})
                    return timed_out
        decided = await self.get(name, key)
        if decided is None:
            raise ApprovalError(f"approval {name}/{key} was deleted while its step waited for it")
        return decided

    async def _ask(self, name: str, key: str, data: Any, message: str | None, timeout: float | None) -> dict[str, Any]:
        approval = await self._record(name, key, TOPIC, data, message, timeout)
        self._ctx.logger.info("approval requested", {"approval": f"{name}/{key}", "timeout": timeout})
        return approval.to_dict()

    async def _record(
        self, name: str, key: str, topic: str, data: Any, message: str | None, timeout: float | None
    ) -> Approval:
        """Store a pending request for (name, key): an error while one is pending, or when another step
        requested it at the same moment (compare-and-set)."""
        ctx = self._ctx
        now = ctx.clock.time()
        approval = Approval(
            name,
            key,
            topic,
            "pending",
            ctx.trace_id,
            ctx.step_name,
            now,
            data=data,
            message=message,
            expires_at=now + timeout if timeout else None,
        )
        current = await ctx.control.get(GROUP, _id(name, key))
        if isinstance(current, dict) and current.get("status") == "pending":
            raise ApprovalError(f"approval {name}/{key} is already pending (since {current['requested_at']:.0f})")
        if not await ctx.control.compare_and_set(GROUP, _id(name, key), current, approval.to_dict()):
            raise ApprovalError(f"approval {name}/{key} was requested at the same moment by another step")
        return approval

    async def _time_out(self, current: Approval) -> Approval | None:
        """A pending approval's timeout wins, unless a decision (or another timeout) got there first: None."""
        timed_out = Approval.from_dict(current.to_dict() | {"status": "timeout", "decided_at": self._ctx.clock.time()})
        record = _id(current.name, current.key)
        if not await self._ctx.control.compare_and_set(GROUP, record, current.to_dict(), timed_out.to_dict()):
            return None
        return timed_out

    async def decide(
        self, name: str, key: str, *, approved: bool, by: str | None = None, comment: str | None = None
    ) -> Approval | None:
        """Record a person's decision and emit it, in the request's trace. None if nothing is pending
        (never requested, already decided, or timed out): answer 409 or 404 to the person."""
        ctx = self._ctx
        current = await self.get(name, key)
        if current is None or not current.pending:
            return None
        decided = Approval.from_dict(
            current.to_dict()
            | {"status": "approved" if approved else "rejected", "decided_at": self._ctx.clock.time()}
            | {"by": by, "comment": comment}
        )
        if not await ctx.control.compare_and_set(GROUP, _id(name, key), current.to_dict(), decided.to_dict()):
            return None  # decided or timed out a moment ago
        # The decision continues the trace that asked for it, not the decider's own.
        await ctx.emit(current.topic, _event(decided, decided.status), trace_id=current.trace_id)
        ctx.logger.info("approval decided", {"approval": f"{name}/{key}", "status": decided.status, "by": by})
        return decided

    async def settle(self, event: dict[str, Any]) -> Approval | None:
        """In the step subscribed to the decision topic: the approval this event decides, or None when the
        event is stale (a timeout after a decision, or a repeated delivery of a superseded request)."""
        if not isinstance(event, dict) or "approval" not in event:
            raise ApprovalError("settle() takes the event of an approval topic, as received by the handler")
        name, key, requested_at = event["approval"]["name"], event["approval"]["key"], event["requested_at"]
        current = await self.get(name, key)
        if current is None or current.requested_at != requested_at:
            return None
        if event["decision"] != "timeout":
            return current if current.status == event["decision"] else None
        if not current.pending:
            return current if current.status == "timeout" else None  # a redelivery, or the decision won
        return await self._time_out(current)

    async def get(self, name: str, key: str) -> Approval | None:
        value = await self._ctx.control.get(GROUP, _id(name, key))
        return Approval.from_dict(value) if isinstance(value, dict) else None

    async def pending(self, name: str | None = None) -> list[Approval]:
        """The approvals waiting for a person, oldest first."""
        return pending_in(await self._ctx.control.items(GROUP), name)


def pending_in(items: dict[str, Any], name: str | None = None) -> list[Approval]:
    found = [Approval.from_dict(v) for v in items.values() if isinstance(v, dict) and v.get("status") == "pending"]
    return sorted((a for a in found if name is None or a.name == name), key=lambda a: a.requested_at)


def _event(approval: Approval, decision: str) -> dict[str, Any]:
    return {
        "approval": {"name": approval.name, "key": approval.key},
        "decision": decision,
        "requested_at": approval.requested_at,
        "data": approval.data,
        "by": approval.by,
        "comment": approval.comment,
    }
