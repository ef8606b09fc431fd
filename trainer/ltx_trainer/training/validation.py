"""The validation loss: a figure that rises when the LoRA overfits.

The training loss cannot tell: each step draws its own sample, noise level and noise, and
it falls as the LoRA learns its clips by heart. The validation loss is the training
strategy's own suffix-conditioned loss (`SuffixStrategy.prepare` and `.loss`: the same
masks, per-token timesteps and target) on windows kept out of training — the clips the
prepare stage marked `heldOut` — at fixed noise levels, from low to high (`SIGMAS`), with
a fixed noise per window and level. The same LoRA therefore always gets the same figure,
and two steps differ only by what was learned between them. Every trained modality gets
its own figure at each level; `total` sums them, as the training loss does.

Without held-out windows (`heldOutShare` 0, or too few clips) it is computed on the
training windows, and says so (`held_out` False): it is then steady from step to step
but no longer shows overfitting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltx_contract.resource import Validation

from .preprocess import load_sample

#: Noise levels, low (the detail next to the suffix) to high (the shot's layout and motion).
SIGMAS = (0.1, 0.4, 0.7, 0.95)


@dataclass
class Evaluation:
    """The validation loss at one step."""

    step: int
    #: per trained modality and "total": the mean over the windows at each of `SIGMAS`
    losses: dict[str, list[float]]
    held_out: bool  # False: computed on the training windows
    windows: int

    @property
    def loss(self) -> float:
        """The figure that is compared from step to step: `total`, averaged over the
        noise levels."""
        return self.mean("total")

    def mean(self, modality: str) -> float:
        values = self.losses[modality]
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "losses": self.losses, "heldOut": self.held_out,
                "windows": self.windows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls(data["step"], data["losses"], data["heldOut"], data["windows"])


def best(history: list[Evaluation]) -> Evaluation | None:
    """The evaluation with the lowest loss (the earliest of equals)."""
    return min(history, key=lambda e: (e.loss, e.step)) if history else None


#: Training windows the figure is computed on when none is held out, spread evenly over
#: the dataset: it is a steady yardstick then, not a test of generalisation, and a dataset
#: of hundreds of windows would make each figure cost hundreds of forwards.
MAX_TRAINING_WINDOWS = 8


def windows(samples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The cached samples the loss is computed on, and whether they are held out: the
    held-out ones, else up to `MAX_TRAINING_WINDOWS` training windows."""
    held = [s for s in samples if s.get("heldOut")]
    if held:
        return held, True
    stride = -(-len(samples) // MAX_TRAINING_WINDOWS)  # ceil: at most the maximum
    return list(samples[::stride]), False


def noise_generator(sample_id: str, level: int) -> torch.Generator:
    """The fixed noise of one window at one level: from the window's id, not its place in
    the dataset, so it is the same at every step and after a resume."""
    digest = hashlib.sha256(f"validation/{sample_id}/{level}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


@dataclass
class Validator:
    """Computes the validation loss with a trainer's live transformer."""

    samples: list[dict[str, Any]]
    held_out: bool
    cache_dir: Path
    sigmas: tuple[float, ...] = SIGMAS
    history: list[Evaluation] = field(default_factory=list)

    @torch.no_grad()
    def evaluate(self, trainer: Any, step: int) -> Evaluation:
        """The loss at `step` with the trainer's LoRA as it is now (`trainer`: a
        `Trainer` that has loaded its model)."""
        # the transformer stays in training mode: nothing in it or the LoRA drops out, and
        # switching modes would make compiled blocks compile again
        sums: dict[str, list[float]] = {}
        for meta in self.samples:
            cached = load_sample(self.cache_dir, meta)
            text = trainer.caption_context(meta["caption"], cached["text"])
            for level, sigma in enumerate(self.sigmas):
                inputs = trainer.prepare(cached, trainer._suffix(meta),
                                         noise_generator(meta["id"], level), sigma=sigma)
                losses = trainer.loss(inputs, text)
                names = sorted(losses)
                values = torch.stack([losses[n].float() for n in names]).tolist()
                for name, value in zip(names, values, strict=True):
                    sums.setdefault(name, [0.0] * len(self.sigmas))[level] += value
        count = len(self.samples)
        means = {name: [round(v / count, 6) for v in values] for name, values in sums.items()}
        return Evaluation(step, means, self.held_out, count)

    def record(self, evaluation: Evaluation) -> None:
        """Add an evaluation; one of a step done again (a resumed run) replaces it."""
        self.history = [e for e in self.history if e.step < evaluation.step] + [evaluation]

    @property
    def best(self) -> Evaluation | None:
        return best(self.history)


def summary(history: list[Evaluation]) -> Validation | None:
    """The latest and the best validation loss, as the result and the status carry them."""
    if not history:
        return None
    latest, top = history[-1], best(history)
    return Validation(loss=round(latest.loss, 6), step=latest.step,
                      best_loss=round(top.loss, 6), best_step=top.step,
                      held_out=latest.held_out, windows=latest.windows)
