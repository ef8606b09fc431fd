"""Training noise levels: the official LTX-2 trainer's stretched, shifted logit-normal.

sigma = sigmoid(mu(tokens) + N(0, 1)), then stretched so that the 0.5th…99.9th
percentiles of that logit-normal span [0, 1] (values under eps reflected above it,
the rest clamped), and one draw in ten replaced by a uniform one on [eps, 1]. The plain
shifted logit-normal piles almost every draw near sigma = 1 at high token counts, so
the low-noise end (the detail next to the suffix) is barely trained; the stretch and
the uniform share keep every noise level in the mix. mu is the scheduler's linear shift
in the token count, extrapolated past its max_image_seq_len without a cap, as the released
trainer's sampler and our own preview sampler compute it: capping it at 4,096 tokens would
train fewer high-noise steps (where the lead-in's layout and motion are decided) than
inference samples. At the largest size the spec allows (14,400 video tokens, mu 5.74) the
stretch's bounds are still 0.04 apart, so it stays finite (`tests/trainer/test_recipe.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.profile import TimestepShift

#: standard-normal quantiles that the stretch maps to 0 and 1
LOW_QUANTILE, HIGH_QUANTILE = -2.5758, 3.0902  # 0.5th, 99.9th percentile


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class ShiftedLogitNormal:
    shift: TimestepShift
    std: float = 1.0
    eps: float = 1e-3
    uniform_share: float = 0.1

    def mu(self, tokens: int) -> float:
        return self.shift.mu(tokens)

    def bounds(self, tokens: int) -> tuple[float, float]:
        """The sigmas that the stretch maps to 0 and to 1."""
        mu = self.mu(tokens)
        return (_sigmoid(mu + LOW_QUANTILE * self.std), _sigmoid(mu + HIGH_QUANTILE * self.std))

    def sample(self, generator: torch.Generator, tokens: int) -> float:
        """One sigma in [0, 1] for a stream of `tokens` tokens."""
        z, uniform, pick = torch.randn((), generator=generator), *torch.rand(2, generator=generator)
        if pick.item() < self.uniform_share:
            return (1 - self.eps) * uniform.item() + self.eps
        low, high = self.bounds(tokens)
        stretched = (_sigmoid(self.mu(tokens) + self.std * z.item()) - low) / (high - low)
        if stretched < self.eps:
            stretched = 2 * self.eps - stretched
        return min(max(stretched, 0.0), 1.0)
