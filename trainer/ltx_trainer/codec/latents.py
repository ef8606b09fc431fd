"""Latents: packing into token sequences, normalising, and the VAEs on either side.

The packing and normalising forms are those of diffusers' `LTX2Pipeline` (its static
helpers `_pack_latents`, `_unpack_latents`, `_normalize_latents`, `_pack_audio_latents`,
…), written here for the one patch size LTX-2 uses (1 × 1 × 1) so that no private
pipeline method is called. Tokens are frame-major: frame, then row, then column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .audio import log_mel


def pack_video(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) → (B, F·H·W, C), contiguous."""
    return latents.flatten(2).transpose(1, 2).contiguous()


def unpack_video(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """(B, F·H·W, C) → (B, C, F, H, W), contiguous."""
    return tokens.transpose(1, 2).unflatten(2, (frames, height, width)).contiguous()


def _channel_stats(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, -1, 1, 1, 1)
    return (vae.latents_mean.view(shape).to(like.device, like.dtype),
            vae.latents_std.view(shape).to(like.device, like.dtype))


def normalize_video(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Per-channel standardisation of (B, C, F, H, W) latents, times the VAE's scaling."""
    mean, std = _channel_stats(vae, latents)
    return (latents - mean) * vae.config.scaling_factor / std


def denormalize_video(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    mean, std = _channel_stats(vae, latents)
    return latents * std / vae.config.scaling_factor + mean


def pack_audio(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, L, M) → (B, L, C·M): all mel bins of a time step form one token."""
    return latents.transpose(1, 2).flatten(2, 3).contiguous()


def unpack_audio(tokens: torch.Tensor, mel_bins: int) -> torch.Tensor:
    """(B, L, C·M) → (B, C, L, M), contiguous."""
    return tokens.unflatten(2, (-1, mel_bins)).transpose(1, 2).contiguous()


def normalize_audio(audio_vae: Any, tokens: torch.Tensor) -> torch.Tensor:
    mean = audio_vae.latents_mean.to(tokens.device, tokens.dtype)
    std = audio_vae.latents_std.to(tokens.device, tokens.dtype)
    return (tokens - mean) / std


def denormalize_audio(audio_vae: Any, tokens: torch.Tensor) -> torch.Tensor:
    mean = audio_vae.latents_mean.to(tokens.device, tokens.dtype)
    std = audio_vae.latents_std.to(tokens.device, tokens.dtype)
    return tokens * std + mean


def latent_mel_bins(audio_vae: Any) -> int:
    """Mel bins of the audio latents (the audio VAE compresses the mel axis 4×)."""
    return audio_vae.config.mel_bins // audio_vae.mel_compression_ratio


@torch.no_grad()
def encode_video(vae: Any, video: torch.Tensor) -> torch.Tensor:
    """(1, 3, F, H, W) pixels in [-1, 1] → normalized latents (C, F', H', W') float32,
    on the VAE's device."""
    latents = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode()
    return normalize_video(vae, latents)[0].float()


@torch.no_grad()
def decode_video(vae: Any, tokens: torch.Tensor, frames: int, height: int, width: int,
                 decoder: Any | None = None, seed: int = 0) -> np.ndarray:
    """Packed normalized latents (1, tokens, C) → (frames, h, w, 3) uint8 frames, through
    the VAE's decoder or, where given, LTX-2.5's diffusion decoder (which samples noise:
    seeded by `seed`). The VAE's statistics denormalize either way."""
    latents = denormalize_video(vae, unpack_video(tokens, frames, height, width))
    if decoder is not None:
        generator = torch.Generator(decoder.device).manual_seed(seed)
        video = decoder.decode(latents.to(decoder.device, decoder.dtype), generator=generator,
                               return_dict=False)[0]
        return to_frames(video)
    timestep = None
    if vae.config.timestep_conditioning:
        timestep = torch.zeros(latents.shape[0], device=vae.device, dtype=vae.dtype)
    video = vae.decode(latents.to(vae.device, vae.dtype), timestep, return_dict=False)[0]
    return to_frames(video)


def to_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) in [-1, 1] → (F, H, W, 3) uint8."""
    video = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return video.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def encode_audio(audio_vae: Any, waveform: torch.Tensor, length: int) -> torch.Tensor:
    """(channels, samples) at the VAE's rate → packed, normalized latents (length, C·M)
    float32, on the VAE's device."""
    config = audio_vae.config
    mel = log_mel(waveform.to(audio_vae.device), config.sample_rate, config.mel_hop_length,
                  config.mel_bins)
    latents = audio_vae.encode(mel.to(audio_vae.dtype)).latent_dist.mode()
    packed = normalize_audio(audio_vae, pack_audio(latents))[0].float()
    if packed.shape[0] < length:  # the VAE's causal padding can leave it a step short
        packed = torch.cat([packed, packed[-1:].expand(length - packed.shape[0], -1)])
    return packed[:length]


@torch.no_grad()
def decode_audio(audio_vae: Any, vocoder: Any, tokens: torch.Tensor
                 ) -> tuple[np.ndarray, int]:
    """Packed normalized audio latents (1, L, C·M) → waveform (channels, samples) float32
    and its sample rate: the vocoder's own output rate (48 kHz for the BWE vocoder)."""
    latents = unpack_audio(denormalize_audio(audio_vae, tokens), latent_mel_bins(audio_vae))
    mel = audio_vae.decode(latents.to(audio_vae.device, audio_vae.dtype), return_dict=False)[0]
    waveform = vocoder(mel.to(vocoder.device, vocoder.dtype))[0]
    return waveform.float().cpu().numpy(), int(vocoder.config.output_sampling_rate)
