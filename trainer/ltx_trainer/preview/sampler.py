"""The backward-extension sampler: generate the lead-in to a closing clip.

The whole window is encoded; its last `conditioningFrames / 8` latent frames stay in
place as clean tokens at timestep 0 (exactly as in training) and the rest is denoised
with the flow-matching scheduler. With audio, the closing audio window is kept clean
the same way and the generated audio is decoded through the audio VAE and vocoder.
Guidance: classifier-free with the negative prompt, and spatio-temporal guidance
through the transformer's STG blocks (`stg_scale` 0 skips that pass).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ltx_contract.suffix import SuffixWindow

from ..training.strategy import shift_mu, suffix_token_mask
from ..training.trainer import _pad_left

GUIDANCE_SCALE = 3.0
#: The real 48-layer model perturbs block 28 for STG; smaller models the same depth share.
STG_BLOCK_FRACTION = 28 / 48


@dataclass
class Models:
    transformer: Any
    connectors: Any
    vae: Any
    audio_vae: Any | None
    vocoder: Any | None
    scheduler: Any


@dataclass
class Extension:
    frames: np.ndarray  # (frames, height, width, 3) uint8
    audio: np.ndarray | None  # (channels, samples) float32
    sample_rate: int | None
    latents: torch.Tensor | None = None  # final packed video latents (1, tokens, channels)


def _pipeline() -> Any:
    from diffusers import LTX2Pipeline

    return LTX2Pipeline


def stg_blocks(num_layers: int) -> list[int]:
    return [min(num_layers - 1, round(STG_BLOCK_FRACTION * num_layers))]


@torch.no_grad()
def extend_backward(
    models: Models,
    closing_video: torch.Tensor,  # (1, 3, frames, height, width) in [-1, 1]
    closing_audio: torch.Tensor | None,  # (channels, samples) at the audio VAE's rate
    prompt_embeds: torch.Tensor,  # Gemma features of the prompt (tokens, dim)
    negative_embeds: torch.Tensor,
    *,
    suffix: SuffixWindow,
    with_audio: bool,
    steps: int = 30,
    guidance_scale: float = GUIDANCE_SCALE,
    stg_scale: float = 1.0,
    seed: int = 0,
    max_sequence_length: int = 1024,
) -> Extension:
    from ..training.encode import encode_audio, encode_video

    pipe = _pipeline()
    transformer, device = models.transformer, models.transformer.device
    dtype = transformer.dtype
    generator = torch.Generator().manual_seed(seed)

    latents = encode_video(models.vae, closing_video).unsqueeze(0)  # (1, C, F, H, W)
    _, _, frames, height, width = latents.shape
    clean = pipe._pack_latents(latents)
    keep = suffix_token_mask(frames, height, width, suffix.suffix_latent_frames)[None, :, None]
    video = keep * clean + (1 - keep) * torch.randn(clean.shape, generator=generator)

    audio_frames = suffix.audio_latent_frames
    audio_channels = transformer.config.audio_in_channels
    audio_keep = torch.zeros(1, audio_frames, 1)
    if with_audio:
        audio_clean = encode_audio(models.audio_vae, closing_audio, audio_frames).unsqueeze(0)
        audio_keep[:, suffix.first_suffix_audio_latent:] = 1
    else:
        audio_clean = torch.zeros(1, audio_frames, audio_channels)
    audio = audio_keep * audio_clean + (1 - audio_keep) * torch.randn(
        (1, audio_frames, audio_channels), generator=generator)

    texts = []
    for embeds in (negative_embeds, prompt_embeds):
        padded, mask = _pad_left(embeds, max_sequence_length)
        texts.append(models.connectors(padded.to(device, models.connectors.dtype),
                                       mask.to(device), padding_side="left"))
    video_text = torch.cat([texts[0][0], texts[1][0]])
    audio_text = torch.cat([texts[0][1], texts[1][1]])
    text_mask = torch.cat([texts[0][2], texts[1][2]])

    video_scheduler = copy.deepcopy(models.scheduler)
    audio_scheduler = copy.deepcopy(models.scheduler)
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    mu = shift_mu(clean.shape[1])
    video_scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=device)
    audio_scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=device)
    coords = transformer.rope.prepare_video_coords(1, frames, height, width, device,
                                                   fps=suffix.frame_rate)
    audio_coords = transformer.audio_rope.prepare_audio_coords(1, audio_frames, device)
    blocks = stg_blocks(transformer.config.num_layers)

    def predict(batch: int, text: tuple, t: torch.Tensor, stg: bool) -> tuple:
        v_t = (1 - keep[..., 0]) * t
        a_t = (1 - audio_keep[..., 0]) * t if with_audio else torch.full((1, audio_frames), t)
        out_v, out_a = transformer(
            hidden_states=video.repeat(batch, 1, 1).to(device, dtype),
            audio_hidden_states=audio.repeat(batch, 1, 1).to(device, dtype),
            encoder_hidden_states=text[0], audio_encoder_hidden_states=text[1],
            timestep=v_t.repeat(batch, 1).to(device),
            audio_timestep=a_t.repeat(batch, 1).to(device),
            sigma=torch.full((batch,), float(t), device=device),
            encoder_attention_mask=text[2], audio_encoder_attention_mask=text[2],
            num_frames=frames, height=height, width=width, fps=suffix.frame_rate,
            audio_num_frames=audio_frames, video_coords=coords.repeat(batch, *[1] * (
                coords.ndim - 1)), audio_coords=audio_coords.repeat(batch, *[1] * (
                    audio_coords.ndim - 1)),
            isolate_modalities=not with_audio,
            spatio_temporal_guidance_blocks=blocks if stg else None,
            use_cross_timestep=False, return_dict=False,
        )
        return out_v.float().cpu(), out_a.float().cpu()

    for t in video_scheduler.timesteps:
        v, a = predict(2, (video_text, audio_text, text_mask), t, stg=False)
        (v_uncond, v_cond), (a_uncond, a_cond) = v.chunk(2), a.chunk(2)
        v_guided = v_cond + (guidance_scale - 1) * (v_cond - v_uncond)
        a_guided = a_cond + (guidance_scale - 1) * (a_cond - a_uncond)
        if stg_scale > 0:
            cond_text = (video_text[1:], audio_text[1:], text_mask[1:])
            v_stg, a_stg = predict(1, cond_text, t, stg=True)
            v_guided = v_guided + stg_scale * (v_cond - v_stg)
            a_guided = a_guided + stg_scale * (a_cond - a_stg)
        video = video_scheduler.step(v_guided, t, video, return_dict=False)[0]
        audio = audio_scheduler.step(a_guided, t, audio, return_dict=False)[0]
        video = keep * clean + (1 - keep) * video  # the suffix stays exactly clean
        audio = audio_keep * audio_clean + (1 - audio_keep) * audio

    decoded = _decode_video(models.vae, pipe._unpack_latents(video, frames, height, width))
    if not with_audio:
        return Extension(decoded, None, None, video)
    waveform, rate = _decode_audio(models, audio, audio_frames)
    return Extension(decoded, waveform, rate, video)


def _decode_video(vae: Any, latents: torch.Tensor) -> np.ndarray:
    latents = _pipeline()._denormalize_latents(latents, vae.latents_mean, vae.latents_std,
                                               vae.config.scaling_factor)
    timestep = None
    if vae.config.timestep_conditioning:
        timestep = torch.zeros(latents.shape[0], device=vae.device, dtype=vae.dtype)
    video = vae.decode(latents.to(vae.device, vae.dtype), timestep, return_dict=False)[0]
    video = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().byte()  # (3, F, H, W)
    return video.permute(1, 2, 3, 0).cpu().numpy()


def _decode_audio(models: Models, packed: torch.Tensor, length: int) -> tuple[np.ndarray, int]:
    pipe, audio_vae = _pipeline(), models.audio_vae
    packed = pipe._denormalize_audio_latents(packed, audio_vae.latents_mean,
                                             audio_vae.latents_std)
    mel_bins = audio_vae.config.mel_bins // 4
    latents = pipe._unpack_audio_latents(packed, length, num_mel_bins=mel_bins)
    mel = audio_vae.decode(latents.to(audio_vae.device, audio_vae.dtype), return_dict=False)[0]
    waveform = models.vocoder(mel.to(models.vocoder.dtype))[0].float().cpu().numpy()
    return waveform, int(models.vocoder.config.output_sampling_rate)
