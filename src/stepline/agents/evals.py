"""`stepline eval`: datasets of inputs run through the real flow, checked, with gates for CI.

An eval is a YAML file in `evals/` (see docs/agents.md):

    target: POST /ask                 # an API step, called over HTTP with each case's input as the body
    output: answer                    # a dotted path into the response body (default: the whole body)
    # output: {state: {group: answers, key: "{trace_id}"}}   # or a state value, after the flow settles
    cases:                            # or  dataset: ask.jsonl  (one {"input": ..., "expect": ...} per line)
      - input: {q: "Capital of France?"}
        expect: Paris                 # shorthand for {contains: Paris}
    checks:                           # applied to every case
      - regex: "^[A-Z]"
      - judge: "The answer is one short, correct sentence."
      - cost_usd: 0.01                # per case
      - latency_ms: 5000              # per case
    gates: {pass_rate: 0.9, cost_usd: 0.50, p95_ms: 4000}

Each run is kept under `.stepline/evals/<name>/`, so `--compare` can show what changed since the last one.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stepline._errors import Problem, ProjectLoadError

EVALS_DIR = "evals"
RESULTS_DIR = Path(".stepline") / "evals"
_SHOWN = 120  # characters of an expected or actual value in a failure reason
_CHECK_KINDS = ("exact", "contains", "regex", "json_schema", "python", "judge", "cost_usd", "latency_ms")


class StateOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group: str
    key: str  # may name {trace_id}


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Any = None
    expect: Any = None  # a string (contains) or a list of checks
    name: str | None = None


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pass_rate: float = Field(1.0, ge=0, le=1)
    cost_usd: float | None = Field(None, ge=0)  # the whole run
    p50_ms: float | None = Field(None, gt=0)
    p95_ms: float | None = Field(None, gt=0)


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    output: str | dict[str, StateOutput] | None = None
    cases: list[Case] = Field(default_factory=list)
    dataset: str | None = None
    checks: list[dict[str, Any]] = Field(default_factory=list)
    gates: Gates = Field(default_factory=Gates)
    # Seconds a case's flow may take to settle; past it the case fails (and the eval goes on).
    settle_timeout: float = Field(30.0, gt=0)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE) /\S*", value):
            raise ValueError('write the API step to call as "METHOD /path", e.g. "POST /ask"')
        return value

    @field_validator("checks")
    @classmethod
    def _checks(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for check in value:
            _check_kind(check)
        return value


@dataclass
class Eval:
    name: str
    file: Path
    spec: EvalSpec
    cases: list[Case]


@dataclass
class CaseResult:
    name: str
    input: Any
    output: Any
    passed: bool
    failures: list[str]
    latency_ms: float
    cost_usd: float
    tokens: int
    trace_id: str | None
    status: int


@dataclass
class EvalRun:
    name: str
    started_at: float
    cases: list[CaseResult] = field(default_factory=list)
    gate_failures: list[str] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return sum(c.passed for c in self.cases) / len(self.cases) if self.cases else 0.0

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.cases)

    def percentile(self, q: float) -> float:
        values = sorted(c.latency_ms for c in self.cases)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "pass_rate": self.pass_rate,
            "cost_usd": self.cost_usd,
            "p50_ms": self.percentile(0.5),
            "p95_ms": self.percentile(0.95),
            "cases": len(self.cases),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started_at": self.started_at,
            "summary": self.summary(),
            "gate_failures": self.gate_failures,
            "cases": [asdict(c) for c in self.cases],
        }


# -- loading ----------------------------------------------------------------------------------------------


def load_evals(root: Path, only: str | None = None) -> list[Eval]:
    """Every eval under `evals/` (or just `only`), with every problem found listed at once.

    A YAML file there is an eval unless it is a dataset: one that an eval names as its `dataset:`, or one
    whose top level is a list (of cases). Those are read through the eval that names them."""
    folder = root / EVALS_DIR
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    parsed: dict[Path, Any] = {}
    for file in files:
        try:
            parsed[file] = yaml.safe_load(file.read_text())
        except (yaml.YAMLError, OSError) as exc:
            parsed[file] = exc
    datasets = {
        (file.parent / raw["dataset"]).resolve(): file
        for file, raw in parsed.items()
        if isinstance(raw, dict) and isinstance(raw.get("dataset"), str)
    }

    def is_dataset(file: Path) -> bool:
        return file.resolve() in datasets or isinstance(parsed[file], list)

    if only is not None:
        named = [f for f in files if f.stem == only]
        if named and all(is_dataset(f) for f in named):
            user = datasets.get(named[0].resolve())
            run = f"run the eval that uses it: stepline eval {user.stem}" if user else "name it in an eval's dataset:"
            raise ProjectLoadError(
                root,
                [Problem(str(named[0].relative_to(root)), "", "is a dataset (a list of cases), not an eval", run)],
            )
        files = named
        if not files:
            raise ProjectLoadError(
                root,
                [Problem(f"{EVALS_DIR}/{only}.yaml", "", "no such eval", f"create it, or pick one in {EVALS_DIR}/")],
            )
    found: list[Eval] = []
    problems: list[Problem] = []
    for file in files:
        if is_dataset(file):
            continue
        rel = str(file.relative_to(root))
        raw = parsed[file]
        try:
            if isinstance(raw, yaml.YAMLError | OSError):
                raise raw
            spec = EvalSpec.model_validate(raw or {})
            cases = [*spec.cases, *(_dataset(file.parent / spec.dataset, rel) if spec.dataset else [])]
            if not cases:
                raise ValueError("no cases: add `cases:` or a `dataset:` file")
            found.append(Eval(file.stem, file, spec, cases))
        except yaml.YAMLError as exc:
            problems.append(Problem(rel, "", f"not valid YAML: {exc}", "fix the syntax at the line named"))
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(Problem(rel, where, err["msg"], "see the eval format in docs/agents.md"))
        except (ValueError, OSError) as exc:
            problems.append(Problem(rel, "", str(exc), "see the eval format in docs/agents.md"))
    if problems:
        raise ProjectLoadError(root, problems)
    return found


def _dataset(path: Path, rel: str) -> list[Case]:
    if not path.exists():
        raise ValueError(f"the dataset {path.name} does not exist beside {rel}")
    rows: list[Any] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                if line.strip():
                    rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path.name} line {number} is not JSON: {exc}") from None
    else:
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"the dataset {path.name} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, list):
            raise ValueError(f"the dataset {path.name} must be a list of cases ({{input, expect, name}} each)")
        rows = loaded or []
    cases = []
    for number, row in enumerate(rows, 1):
        try:
            cases.append(Case.model_validate(row))
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the case'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{path.name} case {number}: {reasons} (a case has input, expect and name)") from None
    return cases


def _check_kind(check: dict[str, Any]) -> str:
    kinds = [k for k in check if k in _CHECK_KINDS]
    if len(kinds) != 1 or set(check) - {kinds[0], "path", "model"}:
        raise ValueError(f"a check is one of {', '.join(_CHECK_KINDS)} (optionally with path:); got {check}")
    return kinds[0]


# -- checking ---------------------------------------------------------------------------------------------


Judge = Callable[[str, Any, Any, "str | None"], Awaitable[tuple[bool, str]]]


async def check_case(
    checks: list[dict[str, Any]], case: Case, output: Any, latency_ms: float, cost: float, judge: Judge
) -> list[str]:
    """Every failed check of one case, as a short reason: the check, what it expected and what it got."""
    failures = []
    for check in [*checks, *_expectations(case.expect)]:
        kind = _check_kind(check)
        expected = check[kind]
        where = f" at {check['path']}" if "path" in check else ""
        value = value_at(output, check["path"]) if "path" in check else output
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        got = f"got {_shown(value)}"
        try:
            if kind == "exact":
                ok = value == expected
            elif kind == "contains":
                ok = str(expected).lower() in text.lower()
            elif kind == "regex":
                ok = re.search(expected, text) is not None
            elif kind == "json_schema":
                error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(expected).iter_errors(value))
                ok = error is None
                if error is not None:
                    got = f"{error.message[:120]}; got {_shown(value)}"
            elif kind == "python":
                module, _, name = str(expected).partition(":")
                ok = bool(getattr(importlib.import_module(module), name)(value, case.input))
            elif kind == "judge":
                ok, why = await judge(str(expected), case.input, value, check.get("model"))
                if not ok:
                    failures.append(f"judge{where}: {why} ({got})")
                continue
            elif kind == "cost_usd":
                ok = cost <= float(expected)
                expected, got = f"<= ${expected}", f"was ${cost:.4f}"
            else:  # latency_ms
                ok = latency_ms <= float(expected)
                expected, got = f"<= {expected} ms", f"was {latency_ms:.0f} ms"
        except Exception as exc:  # a check that cannot run fails this case, not the whole eval
            ok, got = False, f"the check raised {type(exc).__name__}: {str(exc)[:120]}"
        if not ok:
            failures.append(f"{kind} {_clipped(expected)}{where} ({got})")
    return failures


def _shown(value: Any) -> str:
    """The actual value as a failure reason shows it: JSON, clipped."""
    return _clipped(json.dumps(value, default=str, ensure_ascii=False))


def _clipped(value: Any, limit: int = _SHOWN) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expectations(expect: Any) -> list[dict[str, Any]]:
    if expect is None:
        return []
    if isinstance(expect, str):
        return [{"contains": expect}]
    if isinstance(expect, dict):
        return [expect]
    if isinstance(expect, list):
        return [e if isinstance(e, dict) else {"contains": e} for e in expect]
    return [{"exact": expect}]


def value_at(value: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def gate_failures(spec: Gates, run: EvalRun) -> list[str]:
    failures = []
    if run.pass_rate < spec.pass_rate:
        failures.append(f"pass rate {run.pass_rate:.0%} is below {spec.pass_rate:.0%}")
    if spec.cost_usd is not None and run.cost_usd > spec.cost_usd:
        failures.append(f"cost ${run.cost_usd:.4f} is over ${spec.cost_usd}")
    for q, limit in ((0.5, spec.p50_ms), (0.95, spec.p95_ms)):
        if limit is not None and run.percentile(q) > limit:
            failures.append(f"p{round(q * 100)} latency {run.percentile(q):.0f} ms is over {limit:.0f} ms")
    return failures


# -- keeping and comparing runs ------------------------------------------------------------------------------


def save(root: Path, run: EvalRun) -> Path:
    folder = root / RESULTS_DIR / run.name
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(run.started_at))
    path = folder / f"{stamp}-{int(run.started_at * 1000) % 1000:03d}.json"  # sorts in time order
    path.write_text(json.dumps(run.to_dict(), indent=2, default=str))
    return path


def previous(root: Path, name: str, before: Path | None = None) -> dict[str, Any] | None:
    folder = root / RESULTS_DIR / name
    runs = sorted(p for p in folder.glob("*.json") if p != before) if folder.is_dir() else []
    return json.loads(runs[-1].read_text()) if runs else None
