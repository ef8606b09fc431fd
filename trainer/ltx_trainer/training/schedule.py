"""The learning-rate schedule: `learningRate` is the peak, falling linearly to a tenth of it
at the last step, as the official suffix-LoRA recipe decays it (`scheduler_type: linear`,
`end_factor` 0.1). A late step at the peak rate undoes detail the earlier steps learned;
the decay lets the run settle.

The factor is a pure function of the step, held by a torch `LambdaLR` whose state (the
step) is checkpointed, so a resumed run continues the curve exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: the rate at the last step, as a share of `learningRate`
END_FACTOR = 0.1


@dataclass(frozen=True)
class LinearDecay:
    """The factor on `learningRate` at step `step` (0-based) of `total`: an optional linear
    warm-up from 1/(warmup+1) over the first `warmup` steps, then 1 at step `warmup`
    falling linearly to `END_FACTOR` at step `total - 1`."""

    total: int
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError(f"a learning-rate schedule needs 1 or more steps, not {self.total}")
        if not 0 <= self.warmup < self.total:
            raise ValueError(f"warm-up steps must be between 0 and the run's {self.total} "
                             f"steps less one, not {self.warmup}")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        span = self.total - 1 - self.warmup
        if span <= 0:  # a one-step run (or one past its warm-up) takes its step at the peak
            return 1.0
        done = min(step - self.warmup, span) / span
        return 1.0 + (END_FACTOR - 1.0) * done


def make_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int = 0
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's scheduler over `optimizer` (whose rate is the peak), stepped once after
    each optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LinearDecay(total, warmup))
