"""Dataset preparation: fetch, unpack, probe, split, fit and carve suffixes."""

from .archive import ArchiveLimits
from .fetch import FetchPolicy
from .prepare import MANIFEST, TOO_SHORT, PrepareSettings, prepare_dataset

__all__ = ["MANIFEST", "TOO_SHORT", "ArchiveLimits", "FetchPolicy", "PrepareSettings",
           "prepare_dataset"]
