"""The official recipe: training noise levels as Lightricks' LTX-2 trainer draws them (per
modality) and the validation guidance of its suffix-LoRA config."""

from __future__ import annotations

import math

import pytest
import torch

from ltx_contract.spec import FRAME_SIZES
from ltx_contract.suffix import SuffixWindow, latent_frames
from ltx_trainer.model.profile import TimestepShift, profile_from_configs
from ltx_trainer.training.schedule import END_FACTOR, make_scheduler
from ltx_trainer.training.strategy import SuffixStrategy
from ltx_trainer.training.timesteps import ShiftedLogitNormal

#: the official sampler's constants, written out here from its definition
STD, EPS, UNIFORM = 1.0, 1e-3, 0.1
Q_LOW, Q_HIGH = -2.5758, 3.0902  # the 0.5th and 99.9th percentiles of N(0, 1)
LTX2_SCHEDULER = {"use_dynamic_shifting": True, "base_image_seq_len": 1024,
                  "max_image_seq_len": 4096, "base_shift": 0.95, "max_shift": 2.05}


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def official_mu(tokens: int) -> float:
    """The released trainer's shift: the line through (1024, 0.95) and (4096, 2.05),
    extended past 4096 tokens without a cap."""
    slope = (2.05 - 0.95) / (4096 - 1024)
    return slope * tokens + (0.95 - slope * 1024)


def official_cdf(x: float, tokens: int) -> float:
    """P(sigma ≤ x) for the official form: mu linear in the tokens (`official_mu`), a
    logit-normal stretched between its 0.5th and 99.9th percentiles, reflected above eps,
    clamped to [0, 1], and mixed 9:1 with uniform on [eps, 1]."""
    mu = official_mu(tokens)
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


def largest_video_tokens() -> int:
    """The most video tokens a spec can ask for: the largest frame size at 121 frames."""
    return max(latent_frames(121) * (w // 32) * (h // 32) for w, h in FRAME_SIZES.values())


@pytest.mark.parametrize("tokens", [1_024, 6_912, 14_400])
def test_sampled_sigmas_follow_the_official_form(tokens):
    sampler = ShiftedLogitNormal(TimestepShift(1024, 4096, 0.95, 2.05))
    assert sampler.mu(tokens) == pytest.approx(official_mu(tokens))
    samples = draw(sampler, tokens, 5_000)
    # KS critical value at alpha = 0.001 for n = 5,000 is 1.95 / sqrt(n) ≈ 0.0276
    assert ks_distance(samples, lambda x: official_cdf(x, tokens)) < 0.0276
    assert all(0 <= s <= 1 for s in samples)
    # the low-noise end is trained: a plain logit-normal at 6,912 tokens' centre (3.06)
    # put 0.1 % of draws under 0.5
    share = sum(s < 0.5 for s in samples) / len(samples)
    assert share > 0.05, share


def test_the_high_noise_share_at_the_default_size_is_the_official_one():
    """At the defaults (6,912 video tokens) mu is 3.06 as in the released trainer, not the
    2.05 of a shift capped at 4,096 tokens: sigma > 0.9 in about 42 % of steps, not 27 %."""
    sampler = ShiftedLogitNormal(TimestepShift(1024, 4096, 0.95, 2.05))
    assert sampler.mu(6_912) == pytest.approx(3.0586, abs=1e-3)
    official = 1 - official_cdf(0.9, 6_912)
    capped = 1 - official_cdf_at_mu(0.9, 2.05)
    assert official == pytest.approx(0.42, abs=0.01)
    assert capped == pytest.approx(0.27, abs=0.01)
    samples = draw(sampler, 6_912, 5_000, seed=1)
    high = sum(s > 0.9 for s in samples) / len(samples)
    # binomial sd at p = 0.42, n = 5,000 is 0.007: 4 sd
    assert abs(high - official) < 0.028, (high, official)


def official_cdf_at_mu(x: float, mu: float) -> float:
    """`official_cdf` for the token count whose official shift is `mu`."""
    slope = (2.05 - 0.95) / (4096 - 1024)
    return official_cdf(x, round((mu - 0.95) / slope + 1024))


def test_the_stretch_stays_finite_at_the_largest_size_the_spec_allows():
    tokens = largest_video_tokens()
    assert tokens == 14_400  # high 1:1 at 121 frames
    sampler = ShiftedLogitNormal(TimestepShift(1024, 4096, 0.95, 2.05))
    low, high = sampler.bounds(tokens)
    assert math.isfinite(1 / (high - low)) and high - low > 0.01, (low, high)
    samples = draw(sampler, tokens, 2_000)
    assert all(math.isfinite(s) and 0 <= s <= 1 for s in samples)
    assert min(samples) < 0.1  # still reaching the low-noise end


def test_the_shift_comes_from_the_scheduler_config():
    profile = profile_from_configs({}, {}, {**LTX2_SCHEDULER, "base_shift": 0.5,
                                            "max_shift": 1.15, "base_image_seq_len": 256})
    assert profile.shift.mu(256) == pytest.approx(0.5)
    assert profile.shift.mu(4096) == pytest.approx(1.15)
    sampler = ShiftedLogitNormal(profile.shift)
    # past max_image_seq_len the line goes on, as the preview sampler's shift does
    assert sampler.mu(7_936) == pytest.approx(1.15 + (1.15 - 0.5) / (4096 - 256) * 3840)
    assert sampler.mu(7_936) == pytest.approx(profile.shift.mu(7_936))


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


def rates(scheduler, optimizer, steps: int) -> list[float]:
    """The rate each of `steps` optimizer steps is taken at."""
    taken = []
    for _ in range(steps):
        taken.append(optimizer.param_groups[0]["lr"])
        assert scheduler.get_last_lr()[0] == taken[-1]  # what loss.csv records
        optimizer.step()
        scheduler.step()
    return taken


def adamw(lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


@pytest.mark.parametrize("steps", [100, 2_000])
def test_the_learning_rate_decays_linearly_to_a_tenth_as_the_official_suffix_recipe(steps):
    """The official suffix config's `scheduler_type: linear`, `end_factor` 0.1: torch's
    LinearLR from the peak to a tenth, reaching it at the last step."""
    optimizer = adamw(2e-4)
    ours = rates(make_scheduler(optimizer, steps), optimizer, steps)
    reference_optimizer = adamw(2e-4)
    reference = torch.optim.lr_scheduler.LinearLR(
        reference_optimizer, start_factor=1.0, end_factor=0.1, total_iters=steps - 1)
    assert ours == pytest.approx(rates(reference, reference_optimizer, steps), rel=1e-9)
    assert END_FACTOR == 0.1
    assert ours[0] == pytest.approx(2e-4) and ours[-1] == pytest.approx(2e-5)


def test_a_resumed_schedule_continues_where_it_stopped():
    steps, stop = 300, 137
    optimizer = adamw(2e-4)
    straight = rates(make_scheduler(optimizer, steps), optimizer, steps)
    first = adamw(2e-4)
    scheduler = make_scheduler(first, steps)
    before = rates(scheduler, first, stop)
    state = scheduler.state_dict()
    second = adamw(2e-4)  # a new process: a fresh optimizer at the peak, then the states
    resumed = make_scheduler(second, steps)
    second.load_state_dict(first.state_dict())
    resumed.load_state_dict(state)
    assert before + rates(resumed, second, steps - stop) == straight
