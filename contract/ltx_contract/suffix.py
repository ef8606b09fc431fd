"""Suffix carving: which frames are the clean suffix and which seconds of audio match
them. One definition, used by dataset preparation, training and the previews.

A clip of N = 8k+1 pixel frames encodes to k+1 latent frames: latent 0 holds pixel
frame 0, latent j ≥ 1 holds pixel frames 8j-7 … 8j. The last `conditioning_frames / 8`
latents therefore hold exactly the last `conditioning_frames` pixel frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .rules import TEMPORAL_COMPRESSION

#: Audio latents per second of the LTX-2 audio VAE (16 kHz, hop 160, 4× in time).
AUDIO_LATENTS_PER_SECOND = 25
AUDIO_SAMPLE_RATE = 16_000
#: the log-mel the audio VAE takes: one mel frame every `MEL_HOP_LENGTH` samples, each from a
#: centred STFT window of `STFT_WINDOW` samples (64 ms); the VAE keeps one latent per
#: `AUDIO_TEMPORAL_COMPRESSION` mel frames, causally (latent 0: mel frame 0; latent j ≥ 1:
#: mel frames 4j-3 … 4j), as the video VAE keeps one latent frame per 8 pixel frames
MEL_HOP_LENGTH = 160
STFT_WINDOW = 1024
AUDIO_TEMPORAL_COMPRESSION = 4


def latent_frames(pixel_frames: int) -> int:
    """Latent frames of an 8k+1-frame clip."""
    if (pixel_frames - 1) % TEMPORAL_COMPRESSION:
        raise ValueError(f"{pixel_frames} frames is not 8k+1")
    return (pixel_frames - 1) // TEMPORAL_COMPRESSION + 1


def audio_latent_first_sample(latent: int) -> int:
    """The earliest waveform sample (at `AUDIO_SAMPLE_RATE`) that an audio latent's own mel
    frames hear: the start of the centred STFT window of its first mel frame."""
    first_mel = max(0, AUDIO_TEMPORAL_COMPRESSION * latent - (AUDIO_TEMPORAL_COMPRESSION - 1))
    return first_mel * MEL_HOP_LENGTH - STFT_WINDOW // 2


def audio_latent_frames(pixel_frames: int, frame_rate: float) -> int:
    """Audio latents that span a clip, as the LTX-2 pipelines count them."""
    return round(pixel_frames / frame_rate * AUDIO_LATENTS_PER_SECOND)


@dataclass(frozen=True)
class SuffixWindow:
    """The clean closing part of a clip of `frames` pixel frames at `frame_rate`."""

    frames: int
    frame_rate: float
    conditioning_frames: int

    def __post_init__(self) -> None:
        if self.conditioning_frames % TEMPORAL_COMPRESSION:
            raise ValueError("conditioning_frames must be a multiple of 8")
        if not 0 < self.conditioning_frames < self.frames:
            raise ValueError("the suffix must be shorter than the clip")
        latent_frames(self.frames)

    @property
    def first_suffix_frame(self) -> int:
        """Index of the first clean pixel frame; frames before it are the lead-in."""
        return self.frames - self.conditioning_frames

    @property
    def suffix_latent_frames(self) -> int:
        return self.conditioning_frames // TEMPORAL_COMPRESSION

    @property
    def latent_frames(self) -> int:
        return latent_frames(self.frames)

    @property
    def first_suffix_latent(self) -> int:
        return self.latent_frames - self.suffix_latent_frames

    @property
    def duration(self) -> float:
        return self.frames / self.frame_rate

    @property
    def closing_audio_window(self) -> tuple[float, float]:
        """Seconds (start, end) of the audio that plays with the suffix frames."""
        return self.first_suffix_frame / self.frame_rate, self.duration

    @property
    def audio_latent_frames(self) -> int:
        return audio_latent_frames(self.frames, self.frame_rate)

    @property
    def first_suffix_audio_latent(self) -> int:
        """First audio latent of the closing window: the first whose mel frames' STFT
        windows all start at or after the first suffix frame's first sample, so no
        conditioned latent's own input holds lead-in audio. (A latent's nominal 40 ms span
        is not enough: its first mel frame starts 30 ms before it, and that frame's 64 ms
        window reaches 32 ms further back — the latent at the rounded-up span boundary
        heard 5–18 ms of lead-in at 24 fps with 8 and 24 conditioning frames.) The
        encoder's causal convolutions still carry context from earlier latents, as the
        video VAE's carry the lead-in's frames into the suffix's first latent frame; that
        is the same in training and at inference."""
        start, _ = self.closing_audio_window
        start_sample = round(start * AUDIO_SAMPLE_RATE, 6)
        # audio_latent_first_sample grows by 4 hops a latent: solve, then step past rounding
        first = max(0, math.floor((start_sample + STFT_WINDOW // 2) / MEL_HOP_LENGTH
                                  / AUDIO_TEMPORAL_COMPRESSION))
        while audio_latent_first_sample(first) < start_sample:
            first += 1
        return min(self.audio_latent_frames - 1, first)

    def as_dict(self) -> dict[str, object]:
        start, end = self.closing_audio_window
        return {
            "conditioningFrames": self.conditioning_frames,
            "firstSuffixFrame": self.first_suffix_frame,
            "suffixLatentFrames": self.suffix_latent_frames,
            "closingAudioWindow": [round(start, 6), round(end, 6)],
            "firstSuffixAudioLatent": self.first_suffix_audio_latent,
            "audioLatentFrames": self.audio_latent_frames,
        }
