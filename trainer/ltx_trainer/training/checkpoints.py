"""Checkpoints: the typed training state, written whole or not at all.

A checkpoint folder is `step-000250/{lora.safetensors,state.pt}`: the LoRA file (usable
on its own) and everything a resumed run needs to take exactly the steps an
uninterrupted run would — the adapter, optimizer and LR-scheduler state, the RNG
states and the losses so far — none of it tied to a rank, so a checkpoint resumes at any
number of ranks. It also records which rank trained which sample at each step.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingState:
    step: int
    lora: dict[str, torch.Tensor]  # peft's adapter names
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=rng_state)
    #: per step, (rank, sample id) for each slot of its global batch: what each rank trained
    batches: list[list[tuple[int, str]]] = field(default_factory=list)
    #: the validation losses so far (`validation.Evaluation.to_dict`)
    validation: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        torch.save(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> TrainingState:
        # our own file (it holds numpy RNG state, which the weights-only loader refuses)
        return cls(**torch.load(path, weights_only=False))


class Checkpoints:
    """Checkpoints in a folder, the newest `keep` kept."""

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = root, keep

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step-*") if (p / STATE_FILE).is_file())
        return done[-1] if done else None

    def save(self, state: TrainingState, lora_file: dict[str, torch.Tensor]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{state.step:06d}"
        partial = self.root / f".partial-{state.step:06d}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        save_file(lora_file, partial / "lora.safetensors")
        state.save(partial / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in sorted(p for p in self.root.glob("step-*"))[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def optimizer_state_keyed(state: dict[str, Any], names: list[str], by_name: bool
                          ) -> dict[str, Any]:
    """An optimizer state with its parameters keyed by name (as a sharded run saves it,
    torch's `get_optimizer_state_dict`) or by position (`Optimizer.state_dict`), whichever
    way it was saved: so either kind of run resumes the other's checkpoint. `names`: the
    trained parameters' names in the optimizer's order."""
    groups = state.get("param_groups") or [{"params": []}]
    first = next((p for g in groups for p in g["params"]), None)
    if first is None or isinstance(first, str) == by_name:
        return state
    key = ({i: n for i, n in enumerate(names)} if by_name
           else {n: i for i, n in enumerate(names)})
    return {"state": {key[k]: v for k, v in state["state"].items()},
            "param_groups": [{**g, "params": [key[p] for p in g["params"]]} for g in groups]}
