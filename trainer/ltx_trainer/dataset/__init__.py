"""Dataset preparation: fetch, unpack, probe, split, fit and carve suffixes."""

from ltx_contract.manifest import MANIFEST

from .archive import ArchiveLimits
from .fetch import FetchPolicy
from .prepare import TOO_SHORT, PrepareSettings, prepare_dataset

__all__ = ["MANIFEST", "TOO_SHORT", "ArchiveLimits", "FetchPolicy", "PrepareSettings",
           "prepare_dataset"]
