"""Finding step files, importing them, and checking the project as a whole.

Every problem is collected (not just the first), each naming the file, the field and the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from stepline._errors import Problem, ProjectLoadError
from stepline.steps.config import _BY_TYPE, ApiConfig, CronConfig, EventConfig, _problems, parse_config
from stepline.steps.project import Project, Step
from stepline.steps.streams import StreamDef, is_stream_file, parse_stream

STEPS_DIR = "steps"
# Where step files are looked for, as Motia does: steps/ and src/ (its templates use src/), both if present.
STEP_DIRS = (STEPS_DIR, "src")
RESERVED_PREFIXES = ("/__stepline", "/__workbench", "/openapi.json")
_HANDLER_SHAPES = {"api": ("req", "ctx"), "event": ("input", "ctx"), "cron": ("ctx",)}
_project_paths: list[str] = []


def is_step_file(path: Path) -> bool:
    return path.name.endswith(("_step.py", ".step.py"))


def discover(root: Path, kind: Callable[[Path], bool] = is_step_file) -> list[Path]:
    """Every step file (or, with `kind=is_stream_file`, stream file) under the project's steps/ and src/."""
    found: list[Path] = []
    for base in (root / d for d in STEP_DIRS):
        if base.is_dir():
            found += [
                p
                for p in base.rglob("*.py")
                if kind(p) and not any(part.startswith((".", "__")) for part in p.relative_to(base).parts)
            ]
    return sorted(found)


def load_project(root: Path | str) -> Project:
    """Import every step under `root/steps` and `root/src` and check the project.

    Raises ProjectLoadError listing every error."""
    root = Path(root).resolve()
    if not any((root / d).is_dir() for d in STEP_DIRS):
        raise ProjectLoadError(
            root,
            [
                Problem(
                    f"{STEPS_DIR}/",
                    "",
                    f"there is no {STEPS_DIR}/ folder and no src/ folder in {root}; step files live in one of them",
                    "run from the project root or pass --dir PATH; or put your step files in steps/ or src/,"
                    " or create a project with `stepline create NAME`",
                )
            ],
        )
    _prepare_imports(root)
    problems: list[Problem] = []
    steps: list[Step] = []
    modules: dict[str, Path] = {}
    for file in discover(root):
        rel = file.relative_to(root).as_posix()
        name = _module_name(root, file)
        if name in modules:
            problems.append(
                Problem(
                    rel, "", f"its module name {name!r} clashes with {modules[name]}", "rename one of the two files"
                )
            )
            continue
        modules[name] = Path(rel)
        step, file_problems = _load_step(root, file, rel, name)
        problems.extend(file_problems)
        if step is not None:
            steps.append(step)
    streams: dict[str, StreamDef] = {}
    for file in discover(root, is_stream_file):
        rel = file.relative_to(root).as_posix()
        stream, stream_problems = _load_stream(root, file, rel, _module_name(root, file))
        problems.extend(stream_problems)
        if stream is None:
            continue
        first = streams.setdefault(stream.name, stream)
        if first is not stream:
            fix = "give each stream a unique name"
            problems.append(Problem(rel, "name", f"stream {stream.name!r} is also defined in {first.rel}", fix))
    problems.extend(_check_names(steps))
    problems.extend(_check_routes(steps))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ProjectLoadError(root, errors)
    warnings = _topic_warnings(steps) + _lease_warnings(steps) + [p for p in problems if p.severity == "warning"]
    return Project(root, {s.name: s for s in steps}, warnings=warnings, streams=streams)


def _prepare_imports(root: Path) -> None:
    """Make the project importable by its own modules, and forget any project loaded before.

    The project root goes first on sys.path, so `from steps.billing.helpers import x` (for a step under
    src/: `from src.billing.helpers import x`) and `from mylib import y` work in step files with no sys.path
    lines of their own. Modules of an earlier load (another project, or this one before an edit) are
    dropped so the next import reads the files anew.
    """
    top_names = {p.stem if p.suffix == ".py" else p.name for p in root.iterdir()}
    roots = [Path(p) for p in _project_paths] + [root]
    # Decide first, delete after: a namespace package's __path__ is recomputed through its parent.
    stale = [
        name
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in top_names | set(STEP_DIRS)
        and _defined_under(module, roots)
        # not a module still being imported: the app's own main.py at the project root that calls
        # Stepline(".") while uvicorn imports it (dropped, its import fails with KeyError: 'main')
        and not getattr(getattr(module, "__spec__", None), "_initializing", False)
    ]
    for name in stale:
        del sys.modules[name]
    for old in _project_paths:
        while old in sys.path:
            sys.path.remove(old)
    _project_paths[:] = [str(root)]
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()


def _defined_under(module: ModuleType, roots: list[Path]) -> bool:
    paths = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []) or [])]
    return any(p and any(Path(p).resolve().is_relative_to(r) for r in roots) for p in paths)


def _module_name(root: Path, file: Path) -> str:
    """steps/billing/x_step.py is `steps.billing.x_step`; src/billing/x.step.py is `src.billing.x_step`."""
    parts = list(file.relative_to(root).with_suffix("").parts)
    parts[-1] = parts[-1].replace(".", "_")  # x.step.py -> x_step
    return ".".join(parts)


def _import(file: Path, name: str) -> ModuleType:
    """Import a step file from its source (never a stale .pyc: edits within a second must show)."""
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(file):
        return existing
    parent = name.rpartition(".")[0]
    if parent:
        importlib.import_module(parent)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    code = compile(file.read_bytes(), str(file), "exec", dont_inherit=True)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load_step(root: Path, file: Path, rel: str, name: str) -> tuple[Step | None, list[Problem]]:
    try:
        module = _import(file, name)
    except SyntaxError as exc:
        return None, [_syntax_problem(root, rel, exc)]
    except ValidationError as exc:  # a typed config object built with bad values
        model = next((m for m in _BY_TYPE.values() if m.__name__ == exc.title), None)
        if model is not None:
            return None, [_in(rel, p, _line_in(exc.__traceback__, file)) for p in _problems(exc, model)]
        return None, [_import_problem(rel, file, exc)]
    except Exception as exc:
        return None, [_import_problem(rel, file, exc)]

    if not hasattr(module, "config"):
        return None, [
            Problem(
                rel,
                "config",
                "the step file has no `config`",
                'define `config = {"type": "event", "name": "...", ...}` at module level',
            )
        ]
    config, problems = parse_config(module.config)
    line = _config_line(file)
    problems = [_in(rel, p, line) for p in problems]
    raw_type = config.type if config else getattr(module.config, "get", lambda _: None)("type")
    handler = getattr(module, "handler", None)
    shape = _HANDLER_SHAPES.get(raw_type) if isinstance(raw_type, str) else None
    if shape is not None:  # checked even when the config has problems: list them all at once
        problems.extend(_check_handler(rel, str(raw_type), handler, shape))
    if config is None or problems:
        return None, problems
    return Step(config=config, file=file, rel=rel, handler=handler if shape else None), []


def _load_stream(root: Path, file: Path, rel: str, name: str) -> tuple[StreamDef | None, list[Problem]]:
    try:
        module = _import(file, name)
    except SyntaxError as exc:
        return None, [_syntax_problem(root, rel, exc)]
    except Exception as exc:
        return None, [_import_problem(rel, file, exc)]
    return parse_stream(module, file, rel, _config_line(file))


def _in(rel: str, problem: Problem, line: int | None) -> Problem:
    return Problem(rel, problem.field, problem.message, problem.fix, line, problem.severity)


def _check_handler(rel: str, step_type: str, handler: Any, shape: tuple[str, ...]) -> list[Problem]:
    expected = f"async def handler({', '.join(shape)})"
    if handler is None:
        return [
            Problem(
                rel,
                "handler",
                f"{'an' if step_type in ('api', 'event') else 'a'} {step_type} "
                "step needs a handler, and this file defines none",
                f"add `{expected}: ...`",
            )
        ]
    if not callable(handler):
        return [
            Problem(
                rel, "handler", f"`handler` is a {type(handler).__name__}, not a function", f"define `{expected}: ...`"
            )
        ]
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return []
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) > len(shape) or len(positional) < len(shape):
        got = ", ".join(p.name for p in positional)
        return [
            Problem(
                rel,
                "handler",
                f"handler takes ({got}), but {step_type} handlers are called with ({', '.join(shape)})",
                f"use `{expected}`",
                _code_line(handler),
            )
        ]
    return []


def _code_line(func: Any) -> int | None:
    code = getattr(func, "__code__", None)
    return code.co_firstlineno if code is not None else None


def _config_line(file: Path) -> int | None:
    for number, text in enumerate(file.read_text(errors="replace").splitlines(), 1):
        if re.match(r"config\s*(:[^=]*)?=", text):
            return number
    return None


def _syntax_problem(root: Path, rel: str, exc: SyntaxError) -> Problem:
    where = rel
    if exc.filename and Path(exc.filename).resolve() != (root / rel).resolve():
        where = f"{rel} (importing {exc.filename})"
    text = (exc.text or "").strip()
    shown = f": {text}" if text else ""
    return Problem(where, "", f"syntax error: {exc.msg}{shown}", f"fix the syntax on line {exc.lineno}", exc.lineno)


def _line_in(tb: Any, file: Path) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if Path(frame.f_code.co_filename) == file:
            line = lineno
    return line


def _import_problem(rel: str, file: Path, exc: BaseException) -> Problem:
    line = _line_in(exc.__traceback__, file)
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    origin = f" (raised in {last.filename}:{last.lineno})" if last and Path(last.filename) != file else ""
    fix = f"fix the error on line {line}{origin}" if line else f"fix the error{origin}"
    if isinstance(exc, ModuleNotFoundError):
        fix = (
            f"install the package {exc.name!r} (add it to your project's dependencies), or fix the import"
            f" if {exc.name!r} is a module of this project"
        )
    return Problem(rel, "", f"importing the file raised {type(exc).__name__}: {exc}", fix, line)


def _check_names(steps: list[Step]) -> Iterator[Problem]:
    seen: dict[str, Step] = {}
    for step in steps:
        first = seen.setdefault(step.name, step)
        if first is not step:
            yield Problem(
                step.rel,
                "name",
                f"step name {step.name!r} is already used by {first.rel}",
                "give each step a unique name",
                _config_line(step.file),
            )


def _check_routes(steps: list[Step]) -> Iterator[Problem]:
    seen: dict[tuple[str, str], Step] = {}
    for step in steps:
        if not isinstance(step.config, ApiConfig):
            continue
        path = step.config.path
        if path.startswith(RESERVED_PREFIXES):
            yield Problem(
                step.rel,
                "path",
                f"{path} is reserved for Stepline itself",
                "choose a path outside /__stepline, /__workbench and /openapi.json",
            )
        key = (step.config.method, re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/"))
        first = seen.setdefault(key, step)
        if first is not step:
            yield Problem(
                step.rel,
                "path",
                f"route {step.config.method} {path} is also served by {first.rel} (step {first.name!r})",
                "change the path or the method of one of the two steps",
                _config_line(step.file),
            )


def _lease_warnings(steps: list[Step]) -> list[Problem]:
    """A timeout past the visibility timeout: fine while the worker lives (it renews the lease), but a run
    whose worker freezes is handed out again while it may still be going."""
    warnings = []
    for step in steps:
        config = step.config
        if not isinstance(config, EventConfig | CronConfig):
            continue
        timeout = config.infrastructure.handler.timeout
        visibility = config.infrastructure.queue.visibility_timeout
        if visibility is not None and timeout > visibility:
            warnings.append(
                Problem(
                    step.rel,
                    "infrastructure.queue.visibilityTimeout",
                    f"the handler's timeout ({timeout:g} s) exceeds its visibilityTimeout ({visibility:g} s): a "
                    "running handler's lease is renewed while its process lives, but if the process stops renewing "
                    "it (a blocked event loop) the event is handed out again while the first run may still go on",
                    f"set visibilityTimeout above the timeout (e.g. {timeout + 10:g}), or leave it out: the default "
                    "is the timeout + 10 s",
                    _config_line(step.file),
                    severity="warning",
                )
            )
    return warnings


def _subscribed(step: Step) -> list[str]:
    subs = step.config.subscribes if isinstance(step.config, EventConfig) else []
    return [*subs, *step.config.virtual_subscribes]


def _topic_warnings(steps: list[Step]) -> list[Problem]:
    emitted: dict[str, list[Step]] = {}
    heard: dict[str, list[Step]] = {}
    for step in steps:
        for e in [*step.config.emits, *step.config.virtual_emits]:
            emitted.setdefault(e.topic, []).append(step)
        subs = step.config.subscribes if isinstance(step.config, EventConfig) else []
        # A topic a step waits for (ctx.wait_for) is heard as well as one it subscribes to.
        waits = step.config.waits_for if isinstance(step.config, EventConfig | CronConfig) else []
        for topic in [*subs, *step.config.virtual_subscribes, *waits]:
            heard.setdefault(topic, []).append(step)
    warnings: list[Problem] = []
    for topic, emitters in sorted(emitted.items()):
        if topic not in heard:
            for step in emitters:
                warnings.append(
                    Problem(
                        step.rel,
                        "emits",
                        f"nobody subscribes to {topic!r}",
                        f'add a step with "subscribes": ["{topic}"], or drop it from "emits"',
                        severity="warning",
                    )
                )
    for topic, listeners in sorted(heard.items()):
        if topic not in emitted:
            for step in listeners:
                waits_only = isinstance(step.config, EventConfig | CronConfig) and topic in step.config.waits_for
                warnings.append(
                    Problem(
                        step.rel,
                        "waitsFor" if waits_only and topic not in _subscribed(step) else "subscribes",
                        f"nobody emits {topic!r}",
                        f'add "{topic}" to the "emits" of the step that should trigger it '
                        "(or emit it from the CLI: stepline emit)",
                        severity="warning",
                    )
                )
    return warnings


__all__ = ["discover", "is_step_file", "load_project"]
