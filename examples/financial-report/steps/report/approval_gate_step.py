"""A human reviews the draft. No code runs here: the node shows where the flow waits, for hours if need be,
and the approve and reject endpoints carry the decision on."""

config = {
    "type": "noop",
    "name": "ApprovalGate",
    "description": "A reviewer reads the draft and approves or rejects it",
    "virtualSubscribes": ["report.draft.created"],
    "virtualEmits": ["report.approved", "report.rejected"],
    "flows": ["financial-reporting"],
}
