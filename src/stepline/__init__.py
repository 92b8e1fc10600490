"""Stepline: APIs, background jobs, cron jobs and agents as steps in one event-driven Python backend."""

from stepline._errors import (
    NotJSONError,
    Problem,
    ProjectLoadError,
    SchemaValidationError,
    StateUpdateError,
    SteplineError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UndeclaredEmitError,
)
from stepline.agents.llm import LLM, LLMError, LLMUsageError, Reply, StructuredOutputError, TurnLimitError, Usage
from stepline.agents.mcp import McpServerError, mcp_tools
from stepline.agents.memory import Memory, MemoryConflictError
from stepline.agents.tools import Tool, ToolError
from stepline.app import Stepline
from stepline.core.context import Context, State, StepLogger
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

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "ApiConfig",
    "ApiRequest",
    "ApiResponse",
    "Backoff",
    "Context",
    "CronConfig",
    "Emit",
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
    "StoreUnavailableError",
    "StructuredOutputError",
    "Tool",
    "ToolError",
    "TurnLimitError",
    "UndeclaredEmitError",
    "Usage",
    "__version__",
    "load_project",
    "mcp_tools",
]
