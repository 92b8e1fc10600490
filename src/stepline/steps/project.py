"""A loaded project: its steps, and the graph their topics make."""

from __future__ import annotations

import builtins
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, cast

from typing_extensions import TypeVar

from stepline._errors import Problem
from stepline.steps.config import ApiConfig, CronConfig, EventConfig, NoopConfig, StepConfig
from stepline.steps.streams import StreamDef

# Where ctx.approvals.ask and tools that need approval hear of a decision: a topic every project waits for.
APPROVALS_TOPIC = "stepline.approvals"

# Covariant: a Step[ApiConfig] is a Step, wherever any step is taken.
C = TypeVar("C", bound=StepConfig, default=StepConfig, covariant=True)
K = TypeVar("K", bound=StepConfig)


@dataclass(eq=False)
class Step(Generic[C]):
    """A step file, loaded. `Step[ApiConfig]` is an API step: its config is known to be an ApiConfig, so
    code that takes one (the HTTP app, the tool and MCP adapters) needs no isinstance check of its own."""

    config: C
    file: Path
    rel: str  # the file relative to the project root, as shown to people
    handler: Callable[..., Any] | None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def type(self) -> str:
        return self.config.type

    @property
    def flows(self) -> list[str]:
        return self.config.flows

    def __post_init__(self) -> None:
        # asked on every call: worked out once
        self.is_async = inspect.iscoroutinefunction(self.handler)
        # A hash of the step file's source as loaded (read now: the file may change on disk while this code
        # runs): what a suspended run compares when it resumes.
        try:
            source = self.file.read_bytes()
        except OSError:  # a step made in code (tests, Stepline.add): its handler's code stands in
            code = getattr(self.handler, "__code__", None)
            source = code.co_code if code is not None else self.name.encode()
        self.code_hash = hashlib.sha256(source).hexdigest()[:16]

    def of(self, kind: builtins.type[K]) -> Step[K] | None:
        """This step as a `Step[kind]`, or None when its config is of another type."""
        return cast("Step[K]", self) if isinstance(self.config, kind) else None


@dataclass
class Project:
    root: Path
    steps: dict[str, Step]
    warnings: list[Problem] = field(default_factory=list)
    streams: dict[str, StreamDef] = field(default_factory=dict)  # by name, from the *_stream.py files

    def __post_init__(self) -> None:
        self._subscribers: dict[str, list[Step]] = {}
        for step in self.steps.values():
            if isinstance(step.config, EventConfig):
                for topic in step.config.subscribes:
                    self._subscribers.setdefault(topic, []).append(step)

    def subscribers(self, topic: str) -> list[Step]:
        return self._subscribers.get(topic, [])

    @property
    def waited_topics(self) -> frozenset[str]:
        """The topics some step may ctx.wait_for (its `waitsFor`), and the approvals' own."""
        topics = {APPROVALS_TOPIC}
        for step in self.steps.values():
            if isinstance(step.config, EventConfig | CronConfig):
                topics.update(step.config.waits_for)
        return frozenset(topics)

    def awaited_by(self, topic: str) -> list[Step]:
        """Steps that virtually subscribe to `topic`: a human or an outside system acts on it."""
        return [s for s in self.steps.values() if topic in s.config.virtual_subscribes]

    def of_type(self, config_type: type[K]) -> list[Step[K]]:
        return [cast("Step[K]", s) for s in self.steps.values() if isinstance(s.config, config_type)]

    @property
    def api_steps(self) -> list[Step[ApiConfig]]:
        return self.of_type(ApiConfig)

    @property
    def event_steps(self) -> list[Step[EventConfig]]:
        return self.of_type(EventConfig)

    @property
    def cron_steps(self) -> list[Step[CronConfig]]:
        return self.of_type(CronConfig)

    @property
    def noop_steps(self) -> list[Step[NoopConfig]]:
        return self.of_type(NoopConfig)

    @property
    def flows(self) -> list[str]:
        return sorted({f for s in self.steps.values() for f in s.flows})

    def edges(self) -> list[Edge]:
        """Emitter -> subscriber for every topic, real and virtual."""
        listeners: dict[str, list[tuple[Step, bool]]] = {}
        for step in self.steps.values():
            if isinstance(step.config, EventConfig):
                for topic in step.config.subscribes:
                    listeners.setdefault(topic, []).append((step, False))
            for topic in step.config.virtual_subscribes:
                listeners.setdefault(topic, []).append((step, True))
        waiters: dict[str, list[Step]] = {}  # a step that ctx.wait_for's a topic hears it too
        for step in self.steps.values():
            if isinstance(step.config, EventConfig | CronConfig):
                for topic in step.config.waits_for:
                    waiters.setdefault(topic, []).append(step)
        edges: list[Edge] = []
        for step in self.steps.values():
            emits = [(e, False) for e in step.config.emits] + [(e, True) for e in step.config.virtual_emits]
            for emit, virtual_emit in emits:
                for target, virtual_sub in listeners.get(emit.topic, []):
                    edges.append(Edge(step.name, target.name, emit.topic, virtual_emit or virtual_sub, emit.label))
                for target in waiters.get(emit.topic, []):
                    edges.append(Edge(step.name, target.name, emit.topic, virtual_emit, emit.label or "wait_for"))
        return edges


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    topic: str
    virtual: bool
    label: str | None = None
