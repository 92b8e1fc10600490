"""The trace vocabulary: what each kind of record holds, the builders that make them, and the one JSON
shape every reader gets (the CLI's `--json`, the admin API, the Workbench).

A record is (trace_id, kind, step, ts, data). By kind, `data` holds:

    trigger      entry ("POST /orders", "cron Nightly", "emit order.placed"), type ("api", "cron"), tick
    start        delivery_id, event_id, topic, attempt (an event or cron run; empty for an API request)
    end          the start's keys, status ("ok", "error", "cancelled"), duration_ms, error, traceback,
                 errors (schema errors), blocked_at (where the run blocked the event loop)
    emit         topic, event_id, subscribers, data, message_group_id, delay, idempotency_key, duplicate
    state        op, group, key
    log          level, message, fields
    retry        delivery_id, attempt, delay, error, counted (False: a store outage, not counted)
    dead_letter  delivery_id, attempts, error
    llm, tool, code   written by the agent features (stepline.agents)

and, in a delivery's run, every record carries its `delivery_id`, so that overlapping runs of one step
stay apart. Keys are snake_case inside `data` (they are stored that way); the envelope is camelCase.
"""

from __future__ import annotations

from typing import Any

from stepline.adapters.base import TraceRecord, TraceSummary


def trigger(trace_id: str, step: str | None, ts: float, entry: str, **more: Any) -> TraceRecord:
    """What started the trace."""
    return TraceRecord(trace_id, "trigger", step, ts, {"entry": entry, **more})


def start(trace_id: str, step: str, ts: float, run: dict[str, Any]) -> TraceRecord:
    """A handler starts; `run` names the delivery (empty for an API request). It is kept, not copied: the
    end record is made of a copy of it."""
    return TraceRecord(trace_id, "start", step, ts, run)


def end(
    trace_id: str, step: str, ts: float, run: dict[str, Any], status: str, duration_ms: float, **more: Any
) -> TraceRecord:
    """A handler ends: ok, error (with `error` and `traceback`) or cancelled."""
    return TraceRecord(trace_id, "end", step, ts, {**run, "status": status, "duration_ms": duration_ms, **more})


def emit(trace_id: str, step: str | None, ts: float, data: dict[str, Any]) -> TraceRecord:
    return TraceRecord(trace_id, "emit", step, ts, data)


def state(trace_id: str, step: str, ts: float, op: str, group: str, key: str | None) -> TraceRecord:
    return TraceRecord(trace_id, "state", step, ts, {"op": op, "group": group, "key": key})


def log(trace_id: str, step: str, ts: float, level: str, message: str, fields: Any, **more: Any) -> TraceRecord:
    return TraceRecord(trace_id, "log", step, ts, {"level": level, "message": message, "fields": fields, **more})


def retry(
    trace_id: str, step: str, ts: float, delivery_id: str, attempt: int, delay: float, error: str, counted: bool = True
) -> TraceRecord:
    data: dict[str, Any] = {"delivery_id": delivery_id, "attempt": attempt, "delay": delay, "error": error}
    if not counted:
        data["counted"] = False
    return TraceRecord(trace_id, "retry", step, ts, data)


def dead_letter(trace_id: str, step: str, ts: float, delivery_id: str, attempts: int, error: str) -> TraceRecord:
    return TraceRecord(
        trace_id, "dead_letter", step, ts, {"delivery_id": delivery_id, "attempts": attempts, "error": error}
    )


# -- the one JSON shape ---------------------------------------------------------------------------------


def record_json(r: TraceRecord) -> dict[str, Any]:
    return {"traceId": r.trace_id, "kind": r.kind, "step": r.step, "ts": r.ts, "data": r.data}


def summary_json(s: TraceSummary) -> dict[str, Any]:
    return {
        "traceId": s.trace_id,
        "entry": s.entry,
        "startedAt": s.started_at,
        "lastAt": s.last_at,
        "durationMs": round((s.last_at - s.started_at) * 1000, 3),
        "records": s.records,
        "errors": s.errors,
    }
