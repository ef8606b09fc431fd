"""The prepared dataset's manifest (`dataset/manifest.json`): written by the prepare
stage, read by training, previews and the CLI.

Each sample and validation clip records its suffix window for people who inspect the
dataset; code takes it from `suffix_window`, built from the sample's own frame count,
rate and the manifest's conditioning frames, never from a second copy of the rule.

Fields added since version 1 have defaults, so a manifest written before them still
reads; readers of the JSON ignore fields they do not know.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from pydantic import Field

from .documents import Document
from .spec import MIN_CLIPS_TO_HOLD_OUT
from .suffix import SuffixWindow

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class SuffixRecord(Document):
    """`SuffixWindow.as_dict()`, as recorded for each sample."""

    conditioning_frames: int
    first_suffix_frame: int
    suffix_latent_frames: int
    closing_audio_window: tuple[float, float]
    first_suffix_audio_latent: int
    audio_latent_frames: int


def uncaptioned_warning(uncaptioned: int, samples: int, trigger_phrase: str | None) -> str:
    """The one wording, in the manifest, the stage's result and the resource's status, of
    how many training samples have no caption and what that costs."""
    trained_on = f"the trigger phrase {trigger_phrase!r} alone" if trigger_phrase else (
        "an empty prompt")
    return (f"{uncaptioned} of {samples} training samples have no caption: they train on "
            f"{trained_on}, so the LoRA learns their look and motion without words for them "
            "and follows prompts less closely at inference; add a .txt caption beside each clip")


class AudioRecord(Document):
    """A sample's fitted audio: a WAV of exactly the window."""

    path: str
    sample_rate: int
    channels: int
    samples: int
    source_peak: float = 0.0
    normalized: bool = False
    stretched: bool = False


class _Clip(Document):
    video: str
    frames: int
    frame_rate: int
    width: int
    height: int
    suffix: SuffixRecord
    audio: AudioRecord | None = None
    # how the source was turned to be fitted as displayed: clockwise degrees, then a
    # horizontal mirror (from its display matrix or `rotate` tag)
    rotation: int = 0
    mirrored: bool = False

    def suffix_window(self, conditioning_frames: int) -> SuffixWindow:
        return SuffixWindow(self.frames, self.frame_rate, conditioning_frames)


class Sample(_Clip):
    """One training window of a source clip."""

    id: str
    source: str
    window: tuple[float, float]  # source seconds [start, end]
    stretch: float = 1.0
    caption: str = ""
    #: False when its clip had no caption or an empty one: it trains on the trigger alone
    captioned: bool = True
    warnings: list[str] = Field(default_factory=list)  # about this sample (caption, size)
    #: kept out of training for the validation loss (every window of its source clip is)
    held_out: bool = False


class ValidationClip(_Clip):
    """A closing clip fitted for the previews (front-padded when it was shorter)."""

    index: int
    prompt: str = ""
    padded_frames: int = 0


class Skipped(Document):
    """A source clip that gave no sample; `source` is its path inside the archive."""

    source: str
    reason: str


class Manifest(Document):
    version: int = MANIFEST_VERSION
    frames: int
    frame_rate: int
    width: int
    height: int
    conditioning_frames: int
    with_audio: bool
    samples: list[Sample]
    validation: list[ValidationClip] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # for the user: clips by archive path
    #: training samples without a caption of their own (`Sample.captioned` False)
    uncaptioned_samples: int = 0

    def suffix_window(self, clip: _Clip) -> SuffixWindow:
        """The suffix window of one of this manifest's samples or validation clips."""
        return clip.suffix_window(self.conditioning_frames)

    @property
    def training_samples(self) -> list[Sample]:
        return [s for s in self.samples if not s.held_out]

    @property
    def held_out_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.held_out]

    @classmethod
    def read(cls, dataset_dir: Path) -> Manifest:
        return cls.model_validate_json((dataset_dir / MANIFEST).read_text(encoding="utf-8"))

    def write(self, dataset_dir: Path) -> Path:
        path = dataset_dir / MANIFEST
        path.write_text(self.to_json(indent=2), encoding="utf-8")
        return path


def held_out_sources(sources: Iterable[str], share: float) -> set[str]:
    """The source clips whose windows are held out of training for the validation loss.

    Whole clips, so that no window of a held-out clip is trained on (its windows overlap
    in content). `round(share × clips)`, at least one, never every clip; none when `share`
    is 0 or there are fewer than `MIN_CLIPS_TO_HOLD_OUT` clips. Chosen by a hash of the
    clip's path (its place in the archive), so the same clips give the same choice
    whatever the archive's order.
    """
    clips = sorted(set(sources))
    if share <= 0 or len(clips) < MIN_CLIPS_TO_HOLD_OUT:
        return set()
    count = min(max(1, round(share * len(clips))), len(clips) - 1)
    ranked = sorted(clips, key=lambda c: (hashlib.sha256(c.encode()).hexdigest(), c))
    return set(ranked[:count])
