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
    UndeclaredEmitError,
)
from ._loader import load_project
from ._project import Project, Step
from ._request import ApiRequest, ApiResponse

__version__ = "0.1.0"

__all__ = [
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
    "NoopConfig",
    "NotJSONError",
    "Problem",
    "Project",
    "ProjectLoadError",
    "QueryParam",
    "QueueSettings",
    "SchemaValidationError",
    "State",
    "StateUpdateError",
    "Step",
    "StepConfig",
    "StepLogger",
    "Stepline",
    "SteplineError",
    "UndeclaredEmitError",
    "__version__",
    "load_project",
]
