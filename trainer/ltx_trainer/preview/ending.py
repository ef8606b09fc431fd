"""The extended clip's ending: after the generated lead-in come the closing clip's own
fitted frames and audio, not the VAE's reconstruction of them.

The model keeps the closing latents clean, but decoding them gives back an
approximation of the user's frames (and, through the audio VAE and the vocoder, of the
user's sound). So the output is spliced: the decoded window up to the first suffix
frame, then the fitted clip's frames from there on, exactly; the audio likewise, cut on
the sample where the first suffix frame starts, with a short crossfade *before* that
sample so that the seam has no click and the closing audio from the seam on is the
user's own (resampled to the output rate only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltx_contract.suffix import SuffixWindow

from ..codec.latents import to_frames
from ..codec.video import read_video
from ..dataset.media import read_wav
from .reel import REEL_AUDIO_RATE as OUTPUT_AUDIO_RATE
from .reel import resample, write_video
from .sampler import Extension

#: Length of the crossfade that ends on the seam, in seconds.
CROSSFADE_SECONDS = 0.01


@dataclass
class FittedClip:
    """A closing clip as fitted for the model: the frames and audio the user gave."""

    frames: np.ndarray  # (frames, height, width, 3) uint8
    audio: np.ndarray | None = None  # (channels, samples) float32 in [-1, 1]
    sample_rate: int | None = None

    @classmethod
    def read(cls, video: Path, wav: Path | None = None) -> FittedClip:
        frames = to_frames(read_video(video))
        if wav is None:
            return cls(frames)
        audio, rate = read_wav(wav)
        return cls(frames, audio, rate)

    def pixels(self) -> torch.Tensor:
        """(1, 3, frames, height, width) in [-1, 1]: what the video VAE encodes."""
        video = torch.from_numpy(self.frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
        return video.unsqueeze(0)

    def waveform(self) -> torch.Tensor | None:
        """(channels, samples) at the audio VAE's rate, or None without audio."""
        return None if self.audio is None else torch.from_numpy(self.audio)


@dataclass
class Spliced:
    """The extended clip as it is written: frames, and stereo audio at `sample_rate`."""

    frames: np.ndarray
    audio: np.ndarray | None
    sample_rate: int | None
    first_suffix_frame: int
    seam_sample: int | None  # first audio sample of the closing clip's own audio


def audio_samples(frames: int, frame_rate: float, rate: int = OUTPUT_AUDIO_RATE) -> int:
    """Audio samples that play with `frames` frames."""
    return round(frames / frame_rate * rate)


def splice_audio(lead_in: np.ndarray, closing: np.ndarray, seam: int,
                 crossfade: int) -> np.ndarray:
    """`lead_in` before sample `seam`, `closing` from it on; over the `crossfade` samples
    before the seam the lead-in fades linearly into the closing audio, so the step at
    the seam is never larger than the two sources' own (plus their difference spread
    over the fade). Both are (channels, samples) of the same shape."""
    out = lead_in.copy()
    out[:, seam:] = closing[:, seam:]
    fade = min(crossfade, seam)
    if fade:
        weight = (np.arange(1, fade + 1, dtype=np.float32) / (fade + 1))[None]
        window = slice(seam - fade, seam)
        out[:, window] = (1 - weight) * lead_in[:, window] + weight * closing[:, window]
    return out


def splice(extension: Extension, fitted: FittedClip, suffix: SuffixWindow, *,
           decoded_ending: bool = False) -> Spliced:
    """The output of an extension: the generated lead-in, then the fitted clip's own
    frames and audio (or, with `decoded_ending`, the whole decoded window as the model
    reconstructs it)."""
    cut, fps = suffix.first_suffix_frame, suffix.frame_rate
    if len(extension.frames) != len(fitted.frames):
        raise ValueError(f"the extension has {len(extension.frames)} frames and the fitted "
                         f"clip {len(fitted.frames)}")
    frames = extension.frames.copy() if decoded_ending else np.concatenate(
        [extension.frames[:cut], fitted.frames[cut:]])
    if extension.audio is None:
        return Spliced(frames, None, None, cut, None)
    total, seam = audio_samples(len(frames), fps), audio_samples(cut, fps)
    generated = resample(extension.audio, extension.sample_rate, OUTPUT_AUDIO_RATE, total)
    if decoded_ending or fitted.audio is None:
        return Spliced(frames, generated, OUTPUT_AUDIO_RATE, cut, None)
    own = resample(fitted.audio, fitted.sample_rate, OUTPUT_AUDIO_RATE, total)
    audio = splice_audio(generated, own, seam, round(CROSSFADE_SECONDS * OUTPUT_AUDIO_RATE))
    return Spliced(frames, audio, OUTPUT_AUDIO_RATE, cut, seam)


def write_extension(extension: Extension, fitted: FittedClip, suffix: SuffixWindow,
                    dest: Path, *, decoded_ending: bool = False) -> Path:
    """Splice (see `splice`) and write the extended clip as H.264 (+ AAC) to `dest`."""
    spliced = splice(extension, fitted, suffix, decoded_ending=decoded_ending)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return write_video(spliced.frames, round(suffix.frame_rate), dest, spliced.audio,
                       spliced.sample_rate)
