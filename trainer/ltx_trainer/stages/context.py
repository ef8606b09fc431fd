"""What a stage is given: the spec, the store and the run's folder in it, where the model
comes from, the local work folder, and how this pod takes part (its ranks, `/progress`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ltx_contract.spec import TrainingSpec

from ..dataset import FetchPolicy
from ..progress import ProgressState
from ..store import Store
from ..training.settings import TrainSettings

if TYPE_CHECKING:
    import torch

    from ..training.launch import Ranks


@dataclass
class JobContext:
    #: what to train (None only where the spec itself was refused: the result says why)
    spec: TrainingSpec | None
    #: the artifact store (None in a rank that opens it again from `store_location`)
    store: Store | None
    #: the run's folder in the store: "<namespace>/<name>/<uid>" for a Job's resource,
    #: "local/<name>/<digest>" for a local run (`local.local_run_id`)
    run: str
    work_dir: Path
    #: a folder or a single-file checkpoint, or a store URL of either (None: spec.model's)
    model: Path | str | None = None
    #: the Gemma-3 folder of a single-file checkpoint (None: spec.model.textEncoder's)
    text_encoder: Path | str | None = None
    model_cache: Path | None = None  # where a model given by URL is downloaded
    #: a local `ltx-extend train`: the tiny model stands in for a missing base model,
    #: and results record an attempt that stops half-way
    local_run: bool = False
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    termination_log: Path | None = None
    #: what `/progress` serves (None while the context crosses to the ranks)
    progress: ProgressState | None = field(default_factory=ProgressState)
    train_settings: TrainSettings = field(default_factory=TrainSettings)
    device: torch.device | None = None  # None: the default device
    ranks: Ranks | None = None  # more than one starts the train stage's ranks
    #: where the main rank serves `/progress` when the stage runs in ranks
    progress_port: int | None = None
    progress_host: str = "0.0.0.0"
    store_location: str | None = None  # what the store was opened from (a rank opens it again)

    @property
    def in_ranks(self) -> bool:
        return self.ranks is not None and self.ranks.total > 1

    @property
    def main_node(self) -> bool:
        """This pod writes the run's result (node 0, or the only one)."""
        return self.ranks is None or self.ranks.node_rank == 0
