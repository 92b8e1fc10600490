"""The public API is what `__all__` says, no more and no less: a name added or removed is a decision,
made here as well as in CHANGELOG.md, never a side effect of moving code."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "stepline": [
        "ApiConfig", "ApiRequest", "ApiResponse", "ApprovalError", "BacklogFullError", "Backoff", "Clock",
        "Context", "CronConfig", "Emit", "EngineStoppedError", "EventConfig", "HandlerSettings", "Infrastructure",
        "LLM", "LLMError",
        "LLMSettings", "LLMUsageError", "McpServerError", "Memory", "MemoryConflictError", "NoopConfig",
        "NotJSONError", "Price", "Problem", "Project", "ProjectLoadError", "QueryParam", "QueueSettings", "Reply",
        "RunContext", "SchemaValidationError", "State", "StateUpdateError", "Step", "StepConfig", "StepLogger",
        "Stepline", "SteplineError", "StoreCorruptError", "StoreError", "StoreURLError", "StoreUnavailableError",
        "StructuredOutputError", "Tool", "ToolArgumentsError", "ToolError", "TurnLimitError", "UndeclaredEmitError",
        "Usage", "__version__", "load_project", "mcp_tools",
        # durable handlers
        "CodeChangedError", "DurableError", "DurableSettings", "JournalLimitError", "RecordedStepError",
        "StepNameError", "Suspended", "WaitTimeoutError",
        # streams
        "StreamAuthError", "StreamAuthRequest", "StreamDef", "StreamHandle", "Streams", "Subscription",
        # uploads
        "UploadedFile",
    ],
    "stepline.client": ["Message", "StreamClient", "StreamRefusedError", "Watch"],
    "stepline.testing": ["Answer", "Emitted", "FakeClock", "RunningApp", "ScriptedLLM", "StepRun", "serve"],
    "stepline.adapters": [
        "Adapters", "ClaimSpec", "CronLock", "DEFAULT_STORE", "DeadLetter", "Delivery", "Event", "EventQueue",
        "QueueStats", "STORES", "STORE_ENV", "StateStore", "StoreOptions", "StoreURL", "TraceRecord", "TraceStore",
        "TraceSummary", "legacy_store_url", "open_store", "parse_store_url",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_the_public_api(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module]), "a public name was added or removed: say so here"
    assert len(set(mod.__all__)) == len(mod.__all__)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_exported_name_resolves_and_a_star_import_gives_exactly_them(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name, None) is not None, f"{module}.{name} is listed in __all__ but missing"
    namespace: dict[str, object] = {}
    exec(f"from {module} import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(mod.__all__)


def test_the_errors_stepline_raises_share_one_root() -> None:
    import stepline

    errors = [getattr(stepline, n) for n in stepline.__all__ if n.endswith("Error")]
    assert errors and all(issubclass(e, stepline.SteplineError) for e in errors)
