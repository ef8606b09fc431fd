"""The extend-suffix strategy: what is conditioned and what is trained, per modality.

Flow matching with per-token timesteps, as the official trainer's flexible strategy
with a suffix condition. Each trained modality draws its own sigma (shifted by its own
token count) and its own noise; the tokens of its closing window enter clean with
timestep 0 and are left out of the loss; every other token is noised to the stream's
sigma and trained to predict the velocity (noise − clean). A modality that is not
trained (audio in a video-only run) is isolated from the other and fed pure noise at
sigma 1, as at inference, and has no loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx_contract.spec import TrainingSpec
from ltx_contract.suffix import SuffixWindow

from ..codec.latents import pack_video
from ..codec.suffix import audio_keep_mask, video_keep_mask
from ..model.adapter import MODALITIES, trained_modalities
from ..model.forward import Geometry, StreamState
from ..model.profile import ModelProfile
from .timesteps import ShiftedLogitNormal


@dataclass
class Stream:
    """One modality of one step: the model's input and, when trained, its target."""

    state: StreamState
    target: torch.Tensor | None = None  # (1, tokens, channels) velocity
    loss_mask: torch.Tensor | None = None  # (1, tokens) 1 where trained


@dataclass
class StepInputs:
    video: Stream
    audio: Stream
    geometry: Geometry

    @property
    def streams(self) -> dict[str, Stream]:
        return {"video": self.video, "audio": self.audio}


class SuffixStrategy:
    """Suffix conditioning on the modalities it is given (video always; audio when the
    training has it)."""

    def __init__(self, modalities: tuple[str, ...], sampler: ShiftedLogitNormal,
                 audio_channels: int):
        unknown = set(modalities) - set(MODALITIES)
        if "video" not in modalities or unknown:
            raise ValueError(f"modalities must be video and optionally audio, not {modalities}")
        self.modalities, self.sampler, self.audio_channels = modalities, sampler, audio_channels

    @classmethod
    def for_training(cls, spec: TrainingSpec, profile: ModelProfile, audio_channels: int
                     ) -> SuffixStrategy:
        return cls(trained_modalities(spec.with_audio), ShiftedLogitNormal(profile.shift),
                   audio_channels)

    @property
    def trains_audio(self) -> bool:
        return "audio" in self.modalities

    def prepare(self, sample: dict[str, torch.Tensor], suffix: SuffixWindow,
                generator: torch.Generator, device: torch.device | str = "cpu",
                sigma: float | None = None) -> StepInputs:
        """Noise one cached sample for a step; every tensor ends on `device` (the noise is
        drawn on the CPU from `generator`, so a step is the same on any device). `sigma`
        fixes every trained stream's noise level instead of drawing it (the validation
        loss)."""
        latents = sample["video"].unsqueeze(0)  # (1, C, F, H, W)
        _, _, frames, height, width = latents.shape
        video = self._noised(pack_video(latents).float(),
                             video_keep_mask(suffix, frames, height, width), generator, device,
                             sigma)
        if self.trains_audio:
            audio_clean = sample["audio"].unsqueeze(0).float()  # (1, L, D)
            audio_frames = audio_clean.shape[1]
            audio = self._noised(audio_clean, audio_keep_mask(suffix, audio_frames), generator,
                                 device, sigma)
        else:
            audio_frames = suffix.audio_latent_frames
            noise = torch.randn(1, audio_frames, self.audio_channels, generator=generator)
            audio = Stream(StreamState(noise.to(device), torch.ones(1, audio_frames,
                                                                    device=device), 1.0))
        geometry = Geometry(frames, height, width, audio_frames, suffix.frame_rate)
        return StepInputs(video=video, audio=audio, geometry=geometry)

    def _noised(self, clean: torch.Tensor, keep: torch.Tensor, generator: torch.Generator,
                device: torch.device | str, sigma: float | None = None) -> Stream:
        if sigma is None:
            sigma = self.sampler.sample(generator, clean.shape[1])
        noise = torch.randn(clean.shape, generator=generator)
        noised = keep * clean + (1 - keep) * ((1 - sigma) * clean + sigma * noise)
        generated = 1 - keep[..., 0]
        return Stream(
            StreamState(noised.to(device), (generated * sigma).to(device), sigma),
            target=(noise - clean).to(device), loss_mask=generated.to(device))

    def loss(self, predictions: dict[str, torch.Tensor], inputs: StepInputs
             ) -> dict[str, torch.Tensor]:
        """Masked MSE per trained modality and their sum (`total`)."""
        losses = {}
        for name in self.modalities:
            stream = inputs.streams[name]
            losses[name] = masked_mse(predictions[name], stream.target, stream.loss_mask)
        losses["total"] = sum(losses.values())
        return losses


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    """Mean squared error over the tokens where `mask` is 1."""
    per_token = ((prediction.float() - target.float()) ** 2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
