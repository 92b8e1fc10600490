"""Runs evals through the real flow: the project served on a free port, each case a real HTTP request."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from stepline._errors import LLMError
from stepline.agents.evals import Case, CaseResult, Eval, EvalRun, StateOutput, check_case, gate_failures, value_at
from stepline.agents.llm import LLMClient
from stepline.steps.settings import load_settings

_WHY = 400  # characters of a case's failure reasons in the table (each reason is clipped already)
_JUDGE = (
    "You grade the output of a system against a criterion. Reply with only a JSON object "
    '{"pass": true or false, "reason": "one short sentence"}.'
)


async def run_eval(root: Path, ev: Eval) -> EvalRun:
    from stepline.testing import serve

    method, path = ev.spec.target.split(" ", 1)
    judge_client = LLMClient(load_settings(root).llm)
    run = EvalRun(ev.name, time.time())
    # A store of its own, in memory: an eval never mixes its traces and state with the project's.
    async with serve(root, store="memory://", role="all") as app:  # the whole flow, whatever [server] role says
        for index, case in enumerate(ev.cases):
            run.cases.append(await _run_case(app, ev, index, case, method, path, judge_client))
    await judge_client.close()
    run.gate_failures = gate_failures(ev.spec.gates, run)
    return run


async def _run_case(
    app: Any, ev: Eval, index: int, case: Case, method: str, path: str, judge_client: LLMClient
) -> CaseResult:
    """One case. Whatever goes wrong with it (the request, a flow that never settles) fails this case only."""
    import httpx2

    name = case.name or f"case {index + 1}"
    started = time.perf_counter()
    try:
        if method == "GET":
            response = await app.client.get(path, params=case.input or {})
        else:
            response = await app.client.request(method, path, json=case.input)
    except httpx2.HTTPError as exc:
        latency = (time.perf_counter() - started) * 1000
        failure = f"the request {method} {path} failed: {type(exc).__name__}: {exc}"
        return CaseResult(name, case.input, None, False, [failure], latency, 0.0, 0, None, 0)
    trace_id = response.headers.get("x-trace-id")
    failures = [] if response.status_code < 400 else [f"status {response.status_code}"]
    unsettled = await _settle(app, ev.spec.settle_timeout)
    latency = (time.perf_counter() - started) * 1000
    output = await _output(app, ev.spec.output, response, trace_id)
    trace = await app.trace(trace_id) if trace_id else []
    calls = [r.data for r in trace if r.kind == "llm"]
    cost = sum(c.get("cost") or 0.0 for c in calls)
    tokens = sum(c.get("tokens_in", 0) + c.get("tokens_out", 0) for c in calls)
    if unsettled:
        failures.append(unsettled)
    failures += await check_case(ev.spec.checks, case, output, latency, cost, lambda *a: _judge(judge_client, *a))
    return CaseResult(
        name, case.input, output, not failures, failures, latency, cost, tokens, trace_id, response.status_code
    )


async def _settle(app: Any, timeout: float) -> str | None:
    """Wait for the case's flow to settle; past `timeout`, why it did not (the eval goes on to the next case)."""
    try:
        await app.settle(timeout)
    except TimeoutError:
        stats = await app.stepline.engine.queue.stats()
        busy = stats.ready + stats.in_flight
        if busy or not stats.delayed:
            what = f"{busy} {'delivery' if busy == 1 else 'deliveries'} queued or running"
        else:  # nothing to run now: what holds the flow up waits for its time
            what = f"{stats.delayed} delayed (a retry's backoff, an emit's delay or an approval's timeout)"
        return (
            f"the flow did not settle within {timeout:g} s: {what}; raise settle_timeout in the eval if it needs longer"
        )
    return None


async def _output(app: Any, spec: Any, response: Any, trace_id: str | None) -> Any:
    if isinstance(spec, dict):
        state: StateOutput = spec["state"]
        return await app.state(state.group, state.key.replace("{trace_id}", trace_id or ""))
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(spec, str):
        return value_at(body, spec)
    return body


async def _judge(client: LLMClient, criterion: str, given: Any, output: Any, model: str | None) -> tuple[bool, str]:
    """LLM-as-judge, with the project's [llm] settings: pass or fail, and why."""
    chosen = model or client.settings.model
    if not chosen:
        return False, "no model for the judge: set model under [llm] in stepline.toml or give the check model:"
    prompt = f"Criterion: {criterion}\n\nInput: {json.dumps(given)}\n\nOutput: {json.dumps(output)}"
    try:
        response, _ = await client.create(
            model=chosen,
            messages=[{"role": "system", "content": _JUDGE}, {"role": "user", "content": prompt}],
            temperature=0,
        )
    except LLMError as exc:
        return False, f"the judge could not be asked: {exc}"
    text = str(response.choices[0].message.content or "")
    match = re.search(r"\{.*\}", text, re.S)
    try:
        verdict = json.loads(match.group(0)) if match else {}
    except ValueError:
        verdict = {}
    if isinstance(verdict, dict) and isinstance(verdict.get("pass"), bool):
        return verdict["pass"], str(verdict.get("reason", ""))
    return False, f"the judge's reply was not a verdict: {text[:120]}"


def run_table(run: EvalRun) -> Table:
    table = Table(title=f"eval {run.name}", header_style="bold", box=None)
    for column, justify in (("case", "left"), ("result", "left"), ("ms", "right"), ("$", "right"), ("why", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for c in run.cases:
        result = "[green]pass[/]" if c.passed else "[red]FAIL[/]"
        table.add_row(c.name, result, f"{c.latency_ms:,.0f}", f"{c.cost_usd:.4f}", "; ".join(c.failures)[:_WHY])
    return table


def summary_line(run: EvalRun, before: dict[str, Any] | None) -> str:
    s = run.summary()
    line = (
        f"pass rate {s['pass_rate']:.0%} ({sum(c.passed for c in run.cases)}/{s['cases']}) · "
        f"cost ${s['cost_usd']:.4f} · p50 {s['p50_ms']:,.0f} ms · p95 {s['p95_ms']:,.0f} ms"
    )
    if before:
        b = before["summary"]
        line += (
            f"\n[dim]since the last run: pass rate {(s['pass_rate'] - b['pass_rate']) * 100:+.0f} points, "
            f"cost {s['cost_usd'] - b['cost_usd']:+.4f} $, p95 {s['p95_ms'] - b['p95_ms']:+,.0f} ms[/]"
        )
        was = {c["name"]: c["passed"] for c in before["cases"]}
        flipped = [c.name for c in run.cases if c.name in was and was[c.name] != c.passed]
        if flipped:
            line += f"\n[yellow]changed result: {', '.join(flipped)}[/]"
    return line
