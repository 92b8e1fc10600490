"""Stepline: APIs, background jobs, cron jobs and agents as steps in one event-driven Python backend."""

from ._app import Stepline
from ._config import (
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
from ._context import Context, State, StepLogger
from ._errors import (
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
from ._llm import LLM, LLMError, LLMUsageError, Reply, StructuredOutputError, TurnLimitError, Usage
from ._loader import load_project
from ._mcp import McpServerError, mcp_tools
from ._memory import Memory, MemoryConflictError
from ._project import Project, Step
from ._request import ApiRequest, ApiResponse
from ._settings import LLMSettings, Price
from ._tools import Tool, ToolError

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
