"""Outcome classes and their process exit codes, shared by every command and Job."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    USAGE = 2  # argparse's own code for a malformed command line
    INVALID_INPUT = 3  # the API's HTTP 422 class: bills 0
    DOWNLOAD_FAILURE = 4  # bills 0
