"""The official recipe: training noise levels as Lightricks' LTX-2 trainer draws them (per
modality) and the validation guidance of its suffix-LoRA config."""

from __future__ import annotations

import math

import pytest
import torch

from ltx_contract.suffix import SuffixWindow
from ltx_trainer.model.profile import TimestepShift, profile_from_configs
from ltx_trainer.training.strategy import SuffixStrategy
from ltx_trainer.training.timesteps import ShiftedLogitNormal

#: the official sampler's constants, written out here from its definition
STD, EPS, UNIFORM = 1.0, 1e-3, 0.1
Q_LOW, Q_HIGH = -2.5758, 3.0902  # the 0.5th and 99.9th percentiles of N(0, 1)
LTX2_SCHEDULER = {"use_dynamic_shifting": True, "base_image_seq_len": 1024,
                  "max_image_seq_len": 4096, "base_shift": 0.95, "max_shift": 2.05}


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def official_cdf(x: float, tokens: int) -> float:
    """P(sigma ≤ x) for the official form: mu linear in the tokens up to 4096, a logit-normal
    stretched between its 0.5th and 99.9th percentiles, reflected above eps, clamped to
    [0, 1], and mixed 9:1 with uniform on [eps, 1]."""
    mu = 0.95 + (2.05 - 0.95) / (4096 - 1024) * (min(tokens, 4096) - 1024)
    low, high = sigmoid(mu + Q_LOW * STD), sigmoid(mu + Q_HIGH * STD)

    def below(y: float) -> float:  # P(stretched ≤ y) before reflection and clamping
        q = low + y * (high - low)
        if q <= 0:
            return 0.0
        if q >= 1:
            return 1.0
        z = (math.log(q / (1 - q)) - mu) / STD
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    stretched = 1.0 if x >= 1 else (below(x) - below(2 * EPS - x) if x >= EPS else 0.0)
    uniform = min(max((x - EPS) / (1 - EPS), 0.0), 1.0)
    return (1 - UNIFORM) * stretched + UNIFORM * uniform


def ks_distance(samples: list[float], cdf) -> float:
    """Kolmogorov–Smirnov distance between the samples and a CDF."""
    ordered, n = sorted(samples), len(samples)
    return max(max((i + 1) / n - cdf(x), cdf(x) - i / n) for i, x in enumerate(ordered))


def draw(sampler: ShiftedLogitNormal, tokens: int, n: int, seed: int = 0) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    return [sampler.sample(generator, tokens) for _ in range(n)]


@pytest.mark.parametrize("tokens", [1_024, 6_912, 10_800])
def test_sampled_sigmas_follow_the_official_form(tokens):
    sampler = ShiftedLogitNormal(TimestepShift(1024, 4096, 0.95, 2.05))
    samples = draw(sampler, tokens, 5_000)
    # KS critical value at alpha = 0.001 for n = 5,000 is 1.95 / sqrt(n) ≈ 0.0276
    assert ks_distance(samples, lambda x: official_cdf(x, tokens)) < 0.0276
    assert all(0 <= s <= 1 for s in samples)
    # the low-noise end is trained: a plain logit-normal at the old uncapped centre (3.06
    # at 6,912 tokens) put 0.1 % of draws under 0.5
    share = sum(s < 0.5 for s in samples) / len(samples)
    assert share > 0.1, share  # 13.8 % at 6,912 tokens


def test_the_shift_comes_from_the_scheduler_config():
    profile = profile_from_configs({}, {}, {**LTX2_SCHEDULER, "base_shift": 0.5,
                                            "max_shift": 1.15, "base_image_seq_len": 256})
    assert profile.shift.mu(256) == pytest.approx(0.5)
    assert profile.shift.mu(4096) == pytest.approx(1.15)
    sampler = ShiftedLogitNormal(profile.shift)
    assert sampler.mu(100_000) == pytest.approx(1.15)  # capped at max_image_seq_len


def test_each_modality_draws_its_own_sigma_shifted_by_its_own_tokens():
    profile = profile_from_configs({}, {}, LTX2_SCHEDULER)
    strategy = SuffixStrategy(("video", "audio"), ShiftedLogitNormal(profile.shift),
                              audio_channels=8)
    suffix = SuffixWindow(89, 24, 8)  # the defaults: 12 × 24 × 24 = 6,912 video tokens
    sample = {"video": torch.zeros(8, suffix.latent_frames, 24, 24),
              "audio": torch.zeros(suffix.audio_latent_frames, 8)}
    video, audio = [], []
    for step in range(400):
        inputs = strategy.prepare(sample, suffix, torch.Generator().manual_seed(step))
        video.append(inputs.video.state.sigma)
        audio.append(inputs.audio.state.sigma)
    assert all(v != a for v, a in zip(video, audio, strict=True))
    audio_tokens = suffix.audio_latent_frames  # 93
    # KS critical value at alpha = 0.01 for n = 400: 1.63 / 20 ≈ 0.081
    assert ks_distance(audio, lambda x: official_cdf(x, audio_tokens)) < 0.081
    assert ks_distance(video, lambda x: official_cdf(x, 6_912)) < 0.081
    assert ks_distance(audio, lambda x: official_cdf(x, 6_912)) > 0.2  # not the video's shift


@pytest.mark.parametrize(("version", "block"), [("2.0", 29), ("2.3", 28)])
def test_validation_guidance_is_the_official_recipe(version, block):
    v23 = version == "2.3"
    transformer = {"num_layers": 48, "use_prompt_embeddings": not v23, "cross_attn_mod": v23,
                   "audio_cross_attn_mod": v23}
    profile = profile_from_configs(transformer, {"per_modality_projections": v23},
                                   LTX2_SCHEDULER)
    guidance = profile.guidance
    assert (guidance.video_cfg, guidance.audio_cfg, guidance.rescale, guidance.modality) == (
        3.0, 7.0, 0.7, 3.0)
    assert guidance.stg_blocks == (block,)
    # a shallower model perturbs the block at the same depth
    small = profile_from_configs({**transformer, "num_layers": 24},
                                 {"per_modality_projections": v23}, LTX2_SCHEDULER)
    assert small.guidance.stg_blocks == (round(block / 2),)
