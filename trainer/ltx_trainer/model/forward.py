"""The one function that calls the LTX-2 transformer, with the profile's settings.

Training and sampling both call `predict`; the profile decides the cross-modality
timestep and the prompt modulation, so no caller can get them wrong. Every tensor it
makes is on the transformer's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .profile import ModelProfile


@dataclass(frozen=True)
class Geometry:
    """Latent shape of one clip: video frames × height × width, audio latents, frame rate."""

    frames: int
    height: int
    width: int
    audio_frames: int
    fps: float

    @property
    def video_tokens(self) -> int:
        return self.frames * self.height * self.width


@dataclass
class TextContext:
    """Connector outputs for a batch: video and audio prompt features and their mask."""

    video: torch.Tensor
    audio: torch.Tensor
    mask: torch.Tensor

    def rows(self, index: slice) -> TextContext:
        return TextContext(self.video[index], self.audio[index], self.mask[index])


@dataclass
class StreamState:
    """One modality's tokens and noise levels: `timesteps` per token (0 on kept tokens)
    and `sigma`, the stream's noise level, all in [0, 1]."""

    latents: torch.Tensor  # (B, tokens, channels)
    timesteps: torch.Tensor  # (B, tokens)
    sigma: float


def connect_text(connectors: Any, embeds: torch.Tensor, mask: torch.Tensor) -> TextContext:
    """Left-padded Gemma features (B, L, D) and mask → the connectors' outputs."""
    video, audio, text_mask = connectors(embeds.to(connectors.dtype), mask, padding_side="left")
    return TextContext(video, audio, text_mask)


def predict(transformer: Any, profile: ModelProfile, video: StreamState, audio: StreamState,
            text: TextContext, geometry: Geometry, *, isolate: bool,
            stg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity predictions (video, audio) for a batch.

    `isolate` turns the audio↔video attention off (a video-only model, or the modality
    guidance pass); `stg` perturbs the profile's STG blocks.
    """
    device, dtype = transformer.device, transformer.dtype
    batch = video.latents.shape[0]
    scale = profile.timestep_scale
    video_coords = transformer.rope.prepare_video_coords(
        batch, geometry.frames, geometry.height, geometry.width, device, fps=geometry.fps)
    audio_coords = transformer.audio_rope.prepare_audio_coords(batch, geometry.audio_frames,
                                                               device)
    cuda = device.type == "cuda"
    with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
        video_out, audio_out = transformer(
            hidden_states=video.latents.to(dtype),
            audio_hidden_states=audio.latents.to(dtype),
            encoder_hidden_states=text.video, audio_encoder_hidden_states=text.audio,
            encoder_attention_mask=text.mask, audio_encoder_attention_mask=text.mask,
            timestep=video.timesteps * scale, audio_timestep=audio.timesteps * scale,
            sigma=torch.full((batch,), video.sigma * scale, device=device),
            audio_sigma=torch.full((batch,), audio.sigma * scale, device=device),
            num_frames=geometry.frames, height=geometry.height, width=geometry.width,
            fps=geometry.fps, audio_num_frames=geometry.audio_frames,
            video_coords=video_coords, audio_coords=audio_coords,
            isolate_modalities=isolate,
            spatio_temporal_guidance_blocks=list(profile.guidance.stg_blocks) if stg else None,
            use_cross_timestep=profile.use_cross_timestep, return_dict=False,
        )
    return video_out, audio_out
