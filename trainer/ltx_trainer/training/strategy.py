"""The extend-suffix strategy: what is conditioned and what is trained.

Flow matching with per-token timesteps. The last `conditioningFrames / 8` latent
frames are the clean suffix: they enter un-noised with timestep 0 and are left out of
the loss; every token before them is noised to sigma and trained to predict the
velocity (noise − clean). With audio, the audio latents of the closing window are
conditioned the same way and the audio loss covers the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ltx_contract.suffix import SuffixWindow

#: Timestep shift: logit-normal centred on mu, which grows with the token count
#: (as the LTX-2 scheduler's resolution-dependent shift).
BASE_SEQ_LEN, MAX_SEQ_LEN, BASE_SHIFT, MAX_SHIFT = 1024, 4096, 0.95, 2.05


def shift_mu(seq_len: int) -> float:
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    return BASE_SHIFT + slope * (seq_len - BASE_SEQ_LEN)


def sample_sigma(generator: torch.Generator, seq_len: int) -> float:
    """Shifted logit-normal: sigmoid(mu(seq_len) + N(0, 1))."""
    z = torch.randn((), generator=generator).item()
    return 1.0 / (1.0 + math.exp(-(shift_mu(seq_len) + z)))


@dataclass
class StepInputs:
    """Everything one forward pass and its loss need (batch of one)."""

    video: torch.Tensor  # (1, tokens, channels) noised, suffix clean
    video_timestep: torch.Tensor  # (1, tokens), 0 on the suffix
    video_target: torch.Tensor
    video_loss_mask: torch.Tensor  # (1, tokens) 1 where trained
    audio: torch.Tensor
    audio_timestep: torch.Tensor
    audio_target: torch.Tensor | None
    audio_loss_mask: torch.Tensor | None
    sigma: float
    latent_shape: tuple[int, int, int]  # frames, height, width
    audio_frames: int


def suffix_token_mask(frames: int, height: int, width: int, suffix_latent_frames: int
                      ) -> torch.Tensor:
    """1 for the tokens of the last `suffix_latent_frames` latent frames (frame-major
    packing, as the pipelines pack), else 0."""
    mask = torch.zeros(frames, height * width)
    mask[frames - suffix_latent_frames:] = 1
    return mask.flatten()


def prepare_step(sample: dict[str, torch.Tensor], suffix: SuffixWindow, *, with_audio: bool,
                 generator: torch.Generator, pack: Any) -> StepInputs:
    """Noise one cached sample for a training step."""
    latents = sample["video"].unsqueeze(0)  # (1, C, F, H, W)
    _, _, frames, height, width = latents.shape
    clean = pack(latents)  # (1, F*H*W, C)
    tokens = clean.shape[1]
    sigma = sample_sigma(generator, tokens)
    noise = torch.randn(clean.shape, generator=generator)
    keep = suffix_token_mask(frames, height, width, suffix.suffix_latent_frames)[None, :, None]
    video = keep * clean + (1 - keep) * ((1 - sigma) * clean + sigma * noise)
    video_timestep = (1 - keep[..., 0]) * sigma

    audio_frames = suffix.audio_latent_frames
    if with_audio:
        audio_clean = sample["audio"].unsqueeze(0)  # (1, L, D)
        audio_frames = audio_clean.shape[1]
        audio_noise = torch.randn(audio_clean.shape, generator=generator)
        audio_keep = torch.zeros(1, audio_frames, 1)
        audio_keep[:, suffix.first_suffix_audio_latent:] = 1
        audio = audio_keep * audio_clean + (1 - audio_keep) * (
            (1 - sigma) * audio_clean + sigma * audio_noise)
        audio_timestep = (1 - audio_keep[..., 0]) * sigma
        audio_target, audio_loss_mask = audio_noise - audio_clean, 1 - audio_keep[..., 0]
    else:
        # Video only: the audio stream is isolated from the video and sees pure noise,
        # as it does at inference; it gets no loss.
        audio = None
        audio_timestep = torch.ones(1, audio_frames)
        audio_target = audio_loss_mask = None
    return StepInputs(
        video=video, video_timestep=video_timestep, video_target=noise - clean,
        video_loss_mask=1 - keep[..., 0], audio=audio, audio_timestep=audio_timestep,
        audio_target=audio_target, audio_loss_mask=audio_loss_mask, sigma=sigma,
        latent_shape=(frames, height, width), audio_frames=audio_frames,
    )


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    """Mean squared error over the tokens where `mask` is 1."""
    per_token = ((prediction.float() - target.float()) ** 2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
