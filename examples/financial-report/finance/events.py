"""The data each topic of the flow carries. Event steps name these as their `input`, so a malformed
event is rejected (and dead-lettered, replayable) before any handler code runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Source = Literal["crm", "accounting"]
SOURCES: tuple[Source, ...] = ("crm", "accounting")


class ReportRequested(BaseModel):
    """report.requested"""

    reportId: str
    month: str
    requestedBy: str


class DataFetched(BaseModel):
    """report.data.fetched: one source's part is in state under the report's group."""

    reportId: str
    source: Source


class DataFetchFailed(BaseModel):
    """report.data.fetch_failed"""

    reportId: str
    source: Source
    error: str


class ReportRef(BaseModel):
    """report.data.ready, report.approved: everything else is in state."""

    reportId: str


class ReportGenerated(BaseModel):
    """report.generated"""

    reportId: str
    path: str


class ReportRejected(BaseModel):
    """report.rejected"""

    reportId: str
    reason: str
