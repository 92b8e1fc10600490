"""The project's graph for people: a text tree and Mermaid."""

from __future__ import annotations

import re
from typing import Any

from rich.tree import Tree

from stepline.steps.config import ApiConfig, CronConfig, EventConfig
from stepline.steps.project import Project, Step


def trigger(step: Step) -> str:
    config = step.config
    if isinstance(config, ApiConfig):
        return f"{config.method} {config.path}"
    if isinstance(config, CronConfig):
        return f"cron {config.cron}" + ("" if config.timezone == "UTC" else f" ({config.timezone})")
    if isinstance(config, EventConfig):
        return "on " + ", ".join(config.subscribes)
    if config.virtual_subscribes:
        return "waits for " + ", ".join(config.virtual_subscribes)
    return "noop"


def select(project: Project, flow: str | None) -> list[Step]:
    """Steps in `flow` or any flow nested under it (`billing` includes `billing/collections`)."""
    steps = list(project.steps.values())
    if flow is None:
        return steps
    return [s for s in steps if any(f == flow or f.startswith(flow + "/") for f in s.flows)]


def text_tree(project: Project, flow: str | None = None) -> Tree:
    steps = select(project, flow)
    names = {s.name for s in steps}
    outgoing: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for edge in project.edges():
        if edge.source in names:
            outgoing.setdefault((edge.source, edge.topic), []).append((edge.target, edge.virtual))
    tree = Tree(f"[bold]{flow or project.root.name}[/] · {len(steps)} steps")
    for step in sorted(steps, key=lambda s: (_ORDER[s.type], s.name)):
        node = tree.add(f"[{_COLOR[step.type]}]{step.type:<5}[/] [bold]{step.name}[/]  [dim]{trigger(step)}[/]")
        topics = dict.fromkeys(e.topic for e in [*step.config.emits, *step.config.virtual_emits])
        for topic in topics:
            targets = outgoing.get((step.name, topic), [])
            # dashed when a human or outside system stands on the edge (a virtual emit or subscribe)
            arrow = "⇢" if targets and all(virtual for _, virtual in targets) else "→"
            listed = ", ".join(sorted(t for t, _ in targets)) or "[yellow](no subscriber)[/]"
            node.add(f"{topic} {arrow} {listed}")
    return tree


_ORDER = {"api": 0, "cron": 1, "event": 2, "noop": 3}
_COLOR = {"api": "green", "cron": "magenta", "event": "cyan", "noop": "yellow"}


def _node_id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _edge_text(text: str) -> str:
    """Edge text Mermaid parses whatever it says: `|` would end it early, `"` and a line break break the line."""
    return " ".join(text.split()).replace("#", "#35;").replace("|", "#124;").replace('"', "#quot;")


def mermaid(project: Project, flow: str | None = None) -> str:
    steps = select(project, flow)
    names = {s.name for s in steps}
    lines = ["flowchart LR"]
    shapes = {"api": ('["', '"]'), "event": ('("', '")'), "cron": ('[/"', '"/]'), "noop": ('{{"', '"}}')}
    for step in sorted(steps, key=lambda s: s.name):
        left, right = shapes[step.type]
        label = f"{step.name}<br/><small>{trigger(step)}</small>".replace('"', "'")
        lines.append(f"    {_node_id(step.name)}{left}{label}{right}:::{step.type}")
    for edge in project.edges():
        if edge.source in names and edge.target in names:
            arrow = "-.->" if edge.virtual else "-->"
            # As Motia draws it: an emit's label, when it has one, says more than its topic.
            text = _edge_text(edge.label or edge.topic)
            lines.append(f"    {_node_id(edge.source)} {arrow}|{text}| {_node_id(edge.target)}")
    lines += [
        "    classDef api fill:#e8f5e9,stroke:#2e7d32",
        "    classDef event fill:#e3f2fd,stroke:#1565c0",
        "    classDef cron fill:#f3e5f5,stroke:#6a1b9a",
        "    classDef noop fill:#fff3e0,stroke:#ef6c00,stroke-dasharray: 4 3",
    ]
    return "\n".join(lines)


def as_json(project: Project, flow: str | None = None) -> dict[str, Any]:
    steps = select(project, flow)
    names = {s.name for s in steps}
    return {
        "flows": project.flows,
        "steps": [
            {
                "name": s.name,
                "type": s.type,
                "trigger": trigger(s),
                "file": s.rel,
                "flows": s.flows,
                "emits": [e.topic for e in s.config.emits],
                "virtualEmits": [e.topic for e in s.config.virtual_emits],
            }
            for s in steps
        ],
        "edges": [
            {"source": e.source, "target": e.target, "topic": e.topic, "virtual": e.virtual}
            for e in project.edges()
            if e.source in names and e.target in names
        ],
    }
