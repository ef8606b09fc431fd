"""Outcome classes and their process exit codes, shared by every command and Job."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    USAGE = 2  # argparse's own code for a malformed command line
    INVALID_INPUT = 3  # the API's HTTP 422 class: bills 0
    DOWNLOAD_FAILURE = 4  # bills 0


#: Exit codes a retry cannot fix (a malformed command line, invalid input, a failed
#: download): a Job whose pod ends with one fails at once.
FINAL_EXIT_CODES = (ExitCode.USAGE, ExitCode.INVALID_INPUT, ExitCode.DOWNLOAD_FAILURE)


class Outcome(Exception):
    """A failure with a user-facing message and the outcome class it belongs to."""

    exit_code = ExitCode.INTERNAL_ERROR
    reason = "InternalError"

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class InvalidInput(Outcome):
    """The request or its data cannot be trained on (the API's 422)."""

    exit_code = ExitCode.INVALID_INPUT
    reason = "InvalidInput"


class DownloadFailure(Outcome):
    """The dataset or a validation clip could not be fetched."""

    exit_code = ExitCode.DOWNLOAD_FAILURE
    reason = "DownloadFailed"


class Diverged(Outcome):
    """The loss or a gradient became non-finite: the run cannot recover by itself."""

    exit_code = ExitCode.INVALID_INPUT  # the spec's learning rate, not the platform
    reason = "Diverged"


class DiskFull(Outcome):
    """The stage's work folder ran out of space: another attempt on the same disk fails
    the same way, so the Job fails at once (and bills 0)."""

    exit_code = ExitCode.INVALID_INPUT
    reason = "DiskFull"

    def __init__(self, stage: str):
        super().__init__(
            f"the {stage} pod's disk is full: its work folder ran out of space. Give the "
            f"{stage} Jobs more scratch disk (the chart's trainer.{stage}.resources."
            f"ephemeralStorage) or train on a smaller dataset")


class NoBaseModel(InvalidInput):
    """A training Job was given no base model: no --model, no spec.model."""

    reason = "NoBaseModel"


#: What a training without a base model is told; the settings it names are the ones a
#: user (the resource) and a platform (the chart) can set.
NO_BASE_MODEL = (
    "no base model to train on: set spec.model (claimName or url) in the resource, or the "
    "chart's model.claimName / model.url for every training; the tiny random model is only "
    "for local trials (ltx-extend train)"
)
