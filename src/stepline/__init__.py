"""Stepline: APIs, background jobs, cron jobs and agents as steps in one event-driven Python backend."""

from stepline._clock import Clock
from stepline._errors import (
    ApprovalError,
    BacklogFullError,
    EngineStoppedError,
    LLMError,
    LLMUsageError,
    McpServerError,
    MemoryConflictError,
    NotJSONError,
    Problem,
    ProjectLoadError,
    SchemaValidationError,
    StateUpdateError,
    SteplineError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
    StructuredOutputError,
    ToolArgumentsError,
    ToolError,
    TurnLimitError,
    UndeclaredEmitError,
)
from stepline._version import __version__
from stepline.agents.llm import LLM, Reply, Usage
from stepline.agents.mcp import mcp_tools
from stepline.agents.memory import Memory
from stepline.agents.tools import Tool
from stepline.app import Stepline
from stepline.context import Context
from stepline.core.context import RunContext, State, StepLogger
from stepline.steps.config import (
    ApiConfig,
    Backoff,
    CronConfig,
    Emit,
    EventConfig,
    HandlerSettings,
    Infrastructure,
    NoopConfig,
    QueryParam,
    QueueSettings,
    StepConfig,
)
from stepline.steps.loader import load_project
from stepline.steps.project import Project, Step
from stepline.steps.request import ApiRequest, ApiResponse
from stepline.steps.settings import LLMSettings, Price

__all__ = [
    "LLM",
    "ApiConfig",
    "ApiRequest",
    "ApiResponse",
    "ApprovalError",
    "BacklogFullError",
    "Backoff",
    "Clock",
    "Context",
    "CronConfig",
    "Emit",
    "EngineStoppedError",
    "EventConfig",
    "HandlerSettings",
    "Infrastructure",
    "LLMError",
    "LLMSettings",
    "LLMUsageError",
    "McpServerError",
    "Memory",
    "MemoryConflictError",
    "NoopConfig",
    "NotJSONError",
    "Price",
    "Problem",
    "Project",
    "ProjectLoadError",
    "QueryParam",
    "QueueSettings",
    "Reply",
    "RunContext",
    "SchemaValidationError",
    "State",
    "StateUpdateError",
    "Step",
    "StepConfig",
    "StepLogger",
    "Stepline",
    "SteplineError",
    "StoreCorruptError",
    "StoreError",
    "StoreURLError",
    "StoreUnavailableError",
    "StructuredOutputError",
    "Tool",
    "ToolArgumentsError",
    "ToolError",
    "TurnLimitError",
    "UndeclaredEmitError",
    "Usage",
    "__version__",
    "load_project",
    "mcp_tools",
]
