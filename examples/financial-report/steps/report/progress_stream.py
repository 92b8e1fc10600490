"""The `reportProgress` stream: one item per report (group "reports", id the report's id), set by
finance/progress.py at each turn of the flow, watched by the live page and by any stream client."""

from pydantic import BaseModel


class Progress(BaseModel):
    status: str
    message: str
    detail: str = ""
    at: float  # seconds since the epoch


config = {"name": "reportProgress", "schema": Progress, "description": "Where each report stands, live"}
