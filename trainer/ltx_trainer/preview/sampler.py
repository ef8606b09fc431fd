"""The backward-extension sampler: generate the lead-in to a closing clip.

The whole window is encoded; its last `conditioningFrames / 8` latent frames stay in
place as clean tokens at timestep 0 (exactly as in training) and the rest is denoised
along the scheduler's shifted sigma schedule with Euler steps. With audio, the closing
audio window is kept clean the same way and the generated audio is decoded through the
audio VAE and the vocoder. Guidance is the official recipe's, from the model profile:
CFG per modality (video 3, audio 7) against the negative prompt, STG on the profile's
block at `stg_scale` (0 skips that pass), modality guidance (the streams isolated) with
audio, and guidance rescale — combined on the x0 predictions as diffusers'
`LTX2Pipeline` combines them. Every tensor lives on the transformer's device.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ltx_contract.suffix import SuffixWindow

from ..codec.latents import decode_audio, decode_video, encode_audio, encode_video, pack_video
from ..codec.suffix import audio_keep_mask, video_keep_mask
from ..codec.text import pad_left
from ..model.forward import Geometry, StreamState, TextContext, connect_text, predict
from ..model.profile import Guidance, ModelProfile


@dataclass
class Models:
    transformer: Any
    connectors: Any
    vae: Any
    audio_vae: Any | None
    vocoder: Any | None
    scheduler: Any
    decoder: Any | None = None  # LTX-2.5's diffusion decoder where chosen; else the VAE's


@dataclass
class Extension:
    frames: np.ndarray  # (frames, height, width, 3) uint8
    audio: np.ndarray | None  # (channels, samples) float32
    sample_rate: int | None
    latents: torch.Tensor | None = None  # final packed video latents (1, tokens, channels)


@dataclass
class Stream:
    """A stream being denoised: its clean latents and which tokens stay clean."""

    clean: torch.Tensor  # (1, tokens, channels)
    keep: torch.Tensor  # (1, tokens, 1), 1 on the kept (suffix) tokens
    latents: torch.Tensor

    def state(self, sigma: float, batch: int = 1) -> StreamState:
        timesteps = (1 - self.keep[..., 0]) * sigma
        return StreamState(self.latents.expand(batch, -1, -1), timesteps.expand(batch, -1),
                           sigma)


def sigma_schedule(scheduler: Any, steps: int, video_tokens: int, profile: ModelProfile
                   ) -> list[float]:
    """steps + 1 sigmas from 1 to 0, shifted for the token count as the model's scheduler
    (and diffusers' LTX2Pipeline) shifts them."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps),
                            mu=profile.shift.mu(video_tokens))
    return [float(s) for s in scheduler.sigmas]


def _x0(latents: torch.Tensor, velocity: torch.Tensor, timesteps: torch.Tensor
        ) -> torch.Tensor:
    """The clean-latent prediction from a velocity, per token (kept tokens: themselves)."""
    return latents - timesteps[..., None] * velocity.float()


def _rescale(guided: torch.Tensor, conditional: torch.Tensor, factor: float) -> torch.Tensor:
    """Guidance rescale: pull the guided prediction's spread back to the conditional's."""
    if factor <= 0:
        return guided
    ratio = conditional.std(dim=(1, 2), keepdim=True) / guided.std(dim=(1, 2), keepdim=True)
    return factor * guided * ratio + (1 - factor) * guided


@torch.no_grad()
def denoise(transformer: Any, profile: ModelProfile, video: Stream, audio: Stream,
            text: TextContext, geometry: Geometry, sigmas: list[float], *, with_audio: bool,
            stg_scale: float, guidance: Guidance | None = None) -> tuple[Stream, Stream]:
    """Run the Euler loop over `sigmas`; `text` is the (negative, positive) batch."""
    guidance = guidance or profile.guidance
    positive = text.rows(slice(1, 2))
    for sigma, following in itertools.pairwise(sigmas):
        # without audio the audio stream is what training saw: pure noise at sigma 1
        audio_sigma = sigma if with_audio else 1.0
        v_pair, a_pair = predict(transformer, profile, video.state(sigma, 2),
                                 audio.state(audio_sigma, 2), text, geometry,
                                 isolate=not with_audio, sampling=True)
        v_state, a_state = video.state(sigma), audio.state(audio_sigma)
        x0_v = _x0(video.latents, v_pair, v_state.timesteps)
        x0_a = _x0(audio.latents, a_pair, a_state.timesteps)
        (v_uncond, v_cond), (a_uncond, a_cond) = x0_v.chunk(2), x0_a.chunk(2)
        v_guided = v_cond + (guidance.video_cfg - 1) * (v_cond - v_uncond)
        a_guided = a_cond + (guidance.audio_cfg - 1) * (a_cond - a_uncond)
        if stg_scale > 0:
            v_stg, a_stg = predict(transformer, profile, v_state, a_state, positive, geometry,
                                   isolate=not with_audio, stg=True, sampling=True)
            v_guided = v_guided + stg_scale * (v_cond - _x0(video.latents, v_stg,
                                                            v_state.timesteps))
            a_guided = a_guided + stg_scale * (a_cond - _x0(audio.latents, a_stg,
                                                            a_state.timesteps))
        if with_audio and guidance.modality != 1:
            v_iso, a_iso = predict(transformer, profile, v_state, a_state, positive, geometry,
                                   isolate=True, sampling=True)
            v_guided = v_guided + (guidance.modality - 1) * (
                v_cond - _x0(video.latents, v_iso, v_state.timesteps))
            a_guided = a_guided + (guidance.modality - 1) * (
                a_cond - _x0(audio.latents, a_iso, a_state.timesteps))
        video = _euler(video, _rescale(v_guided, v_cond, guidance.rescale), sigma, following)
        if with_audio:
            audio = _euler(audio, _rescale(a_guided, a_cond, guidance.rescale), sigma, following)
    return video, audio


def _euler(stream: Stream, x0: torch.Tensor, sigma: float, following: float) -> Stream:
    """One Euler step of the flow from `sigma` to `following`, the kept tokens reset to
    their clean latents."""
    velocity = (stream.latents - x0) / sigma
    latents = stream.latents + (following - sigma) * velocity
    return replace(stream, latents=stream.keep * stream.clean + (1 - stream.keep) * latents)


def prompt_context(connectors: Any, prompt: torch.Tensor, negative: torch.Tensor,
                   max_sequence_length: int) -> TextContext:
    """The (negative, positive) batch of connector outputs, on the connectors' device."""
    pads = [pad_left(e, max_sequence_length, connectors.device, connectors.dtype)
            for e in (negative, prompt)]
    return connect_text(connectors, torch.cat([p[0] for p in pads]),
                        torch.cat([p[1] for p in pads]))


def initial_streams(video_latents: torch.Tensor, audio_latents: torch.Tensor | None,
                    suffix: SuffixWindow, audio_channels: int, generator: torch.Generator,
                    device: torch.device) -> tuple[Stream, Stream, Geometry]:
    """The streams to denoise, on `device`: the closing clip's latents kept on the suffix
    tokens, noise elsewhere (drawn on the CPU, so a seed gives the same start anywhere).
    `video_latents` is (1, C, F, H, W); `audio_latents` (L, C·M) or None for no audio."""
    _, _, frames, height, width = video_latents.shape
    clean = pack_video(video_latents).to(device)
    keep = video_keep_mask(suffix, frames, height, width, device)
    noise = torch.randn(clean.shape, generator=generator).to(device)
    video = Stream(clean, keep, keep * clean + (1 - keep) * noise)
    audio_frames = suffix.audio_latent_frames
    audio_noise = torch.randn((1, audio_frames, audio_channels), generator=generator).to(device)
    if audio_latents is not None:
        audio_clean = audio_latents[None].to(device)
        audio_keep = audio_keep_mask(suffix, audio_frames, device)
    else:
        audio_clean = torch.zeros_like(audio_noise)
        audio_keep = torch.zeros(1, audio_frames, 1, device=device)
    audio = Stream(audio_clean, audio_keep,
                   audio_keep * audio_clean + (1 - audio_keep) * audio_noise)
    return video, audio, Geometry(frames, height, width, audio_frames, suffix.frame_rate)


@torch.no_grad()
def extend_backward(
    models: Models,
    profile: ModelProfile,
    closing_video: torch.Tensor,  # (1, 3, frames, height, width) in [-1, 1]
    closing_audio: torch.Tensor | None,  # (channels, samples) at the audio VAE's rate
    prompt_embeds: torch.Tensor,  # Gemma features of the prompt (tokens, dim)
    negative_embeds: torch.Tensor,
    *,
    suffix: SuffixWindow,
    with_audio: bool,
    steps: int = 30,
    stg_scale: float = 1.0,
    seed: int = 0,
    max_sequence_length: int = 1024,
    guidance: Guidance | None = None,
) -> Extension:
    transformer = models.transformer
    latents = encode_video(models.vae, closing_video).unsqueeze(0)  # (1, C, F, H, W)
    audio_latents = None
    if with_audio:
        audio_latents = encode_audio(models.audio_vae, closing_audio, suffix.audio_latent_frames)
    video, audio, geometry = initial_streams(latents, audio_latents, suffix,
                                             transformer.config.audio_in_channels,
                                             torch.Generator().manual_seed(seed),
                                             transformer.device)
    text = prompt_context(models.connectors, prompt_embeds, negative_embeds, max_sequence_length)
    sigmas = sigma_schedule(models.scheduler, steps, geometry.video_tokens, profile)
    video, audio = denoise(transformer, profile, video, audio, text, geometry, sigmas,
                           with_audio=with_audio, stg_scale=stg_scale, guidance=guidance)

    decoded = decode_video(models.vae, video.latents, geometry.frames, geometry.height,
                           geometry.width, decoder=models.decoder, seed=seed)
    if not with_audio:
        return Extension(decoded, None, None, video.latents.cpu())
    waveform, rate = decode_audio(models.audio_vae, models.vocoder, audio.latents)
    return Extension(decoded, waveform, rate, video.latents.cpu())
