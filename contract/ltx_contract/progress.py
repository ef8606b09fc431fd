"""What a running stage reports on `/progress`, and the operator copies into
`status.progress` (same names on both sides)."""

from __future__ import annotations

from .documents import Document
from .resource import Validation


class ProgressReport(Document):
    stage: str = "starting"
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    steps_per_second: float | None = None
    eta_seconds: float | None = None
    updated: float | None = None  # Unix time of the last change
    validation: Validation | None = None  # once the validation loss was computed
