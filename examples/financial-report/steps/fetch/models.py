from pydantic import BaseModel


class ReportRequested(BaseModel):
    reportId: str
    month: str
    requestedBy: str


class DataFetched(BaseModel):
    reportId: str
    source: str
