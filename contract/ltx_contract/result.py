"""A stage's result: what a Job tells the operator when it ends.

Written to the store (`<run>/result-<stage>.json`) and, within 4 KiB, to the pod's
termination message, which is how the operator reads it.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, ValidationError

from .documents import Document
from .resource import Artifacts, Validation

#: Kubernetes keeps at most this much of a termination message.
MAX_TERMINATION_BYTES = 4096


class JobResult(Document):
    stage: str = ""
    outcome: Literal["Succeeded", "Failed"]
    reason: str = ""
    message: str = ""
    exit_code: int = 0
    steps_completed: int = 0
    billable_units: int = 0
    artifacts: Artifacts = Field(default_factory=Artifacts)
    #: the train stage's validation loss, latest and best
    validation: Validation | None = None
    #: the base model version the stage ran on ("ltx-2.5"), read from the model's files
    model_version: str | None = None
    #: the prepare stage's training samples, and those without a caption of their own
    samples: int = 0
    uncaptioned_samples: int = 0
    #: presigned HTTPS links for the artifacts; in the store's copy only
    download_urls: Artifacts = Field(default_factory=Artifacts)
    #: a presigned HTTPS link to the store's copy of this result (which has the links
    #: above): the one link that travels in the termination message
    result_url: str | None = None

    def to_dict(self) -> dict:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "Succeeded"

    def termination_message(self) -> str:
        """The result as JSON in at most 4 KiB (the download links stay in the store)."""
        short = self.model_dump(by_alias=True, mode="json", exclude={"download_urls"},
                                exclude_none=True)
        text = json.dumps(short)
        while len(text.encode()) > MAX_TERMINATION_BYTES and short["message"]:
            short["message"] = short["message"][: len(short["message"]) // 2] + "…"
            text = json.dumps(short)
        if len(text.encode()) > MAX_TERMINATION_BYTES:  # the link alone is too long
            short.pop("resultUrl", None)
            text = json.dumps(short)
        return text

    @classmethod
    def from_termination_message(cls, text: str | None) -> JobResult | None:
        """The result a pod left, or None when its message is not one (a crash log)."""
        try:
            return cls.model_validate_json(text or "")
        except ValidationError:
            return None
