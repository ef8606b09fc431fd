"""Rendering the validation previews of a training into a reel: each validation clip
extended backward with the LoRA as it is now (the live trainer's transformer)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ltx_contract.manifest import Manifest
from ltx_contract.spec import TrainingSpec

from ..codec.text import load_text
from ..model.profile import ModelProfile
from .ending import FittedClip, Spliced, splice
from .reel import ReelPart, write_reel
from .sampler import Models, extend_backward

if TYPE_CHECKING:
    from ..model.loader import Model

log = logging.getLogger(__name__)


def load_preview_models(model: Model, transformer: Any, connectors: Any,
                        device: torch.device, with_audio: bool) -> Models:
    """The preview's components beside the transformer and connectors (the live trainer's,
    or `extend`'s); the video decoder is the one `model.decoders.choose_decoder` picks for
    `device`."""
    from ..model.decoders import load_video_decoder

    return Models(
        transformer=transformer, connectors=connectors,
        vae=model.load("vae", device),
        audio_vae=model.load("audio_vae", device) if with_audio else None,
        vocoder=model.load("vocoder", device) if with_audio else None,
        scheduler=model.load("scheduler", device),
        decoder=load_video_decoder(model, device),
    )


def reel_part(spliced: Spliced, prompt: str) -> ReelPart:
    """One reel part: the spliced extension cut at its seam into the generated lead-in
    and the real closing clip (audio cut on the same instant)."""
    cut = spliced.first_suffix_frame
    part = ReelPart(lead_in=spliced.frames[:cut], closing=spliced.frames[cut:], prompt=prompt)
    if spliced.audio is not None:
        seam = spliced.seam_sample if spliced.seam_sample is not None else round(
            cut / len(spliced.frames) * spliced.audio.shape[1])
        part.lead_in_audio, part.closing_audio = spliced.audio[:, :seam], spliced.audio[:, seam:]
        part.lead_in_rate = part.closing_rate = spliced.sample_rate
    return part


def render_reel(spec: TrainingSpec, dataset_dir: Path, cache_dir: Path, models: Models,
                profile: ModelProfile, dest: Path | None, *, steps: int, seed: int,
                max_sequence_length: int) -> Path | None:
    """Extend every validation clip backward and write the combined reel to `dest`
    (None when the training has no validation clips). `dest` None samples the same and
    writes nothing: a rank of a sharded base, whose forwards the main rank's need."""
    manifest = Manifest.read(dataset_dir)
    if not manifest.validation:
        return None
    was_training = models.transformer.training
    models.transformer.eval()
    parts = []
    negative = load_text(cache_dir, spec.validation_negative_prompt)
    for entry in manifest.validation:
        suffix = manifest.suffix_window(entry)
        fitted = FittedClip.read(dataset_dir / entry.video,
                                 dataset_dir / entry.audio.path if spec.with_audio else None)
        result = extend_backward(
            models, profile, fitted.pixels(), fitted.waveform(),
            load_text(cache_dir, entry.prompt), negative, suffix=suffix,
            with_audio=spec.with_audio, steps=steps, stg_scale=spec.stg_scale,
            seed=seed + entry.index, max_sequence_length=max_sequence_length)
        if dest is not None:
            parts.append(reel_part(splice(result, fitted, suffix), entry.prompt))
            log.info("preview %d rendered", entry.index)
    models.transformer.train(was_training)
    gc.collect()
    if dest is None:
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    path = write_reel(parts, dest, manifest.validation[0].frame_rate)
    log.info("validation reel %s", path)
    return path


@dataclass
class ValidationReels:
    """A training's validation reels, each rendered with the LoRA as it is now on the
    live transformer and connectors the trainer hands over: every `preview_every` steps
    (`at_step`) and at the end. With no `folder`, this rank only takes part in the
    sampling (a sharded base needs every rank in each forward) and writes nothing;
    `rendered` is told of each reel a step wrote (the log book's strip of frames)."""

    spec: TrainingSpec
    model: Model
    work: Path  # the train stage's folder: its dataset/ and cache/
    device: torch.device
    steps: int  # denoising steps of each preview
    seed: int
    max_sequence_length: int
    folder: Path | None = None
    rendered: Callable[[int, Path | None], None] | None = None

    def render(self, transformer: Any, connectors: Any, dest: Path | None) -> Path | None:
        """The reel written to `dest` (None: sampled only), or None without validation."""
        if not self.spec.validation:
            return None
        models = load_preview_models(self.model, transformer, connectors, self.device,
                                     self.spec.with_audio)
        return render_reel(self.spec, self.work / "dataset", self.work / "cache", models,
                           self.model.profile, dest, steps=self.steps, seed=self.seed,
                           max_sequence_length=self.max_sequence_length)

    def at_step(self, step: int, transformer: Any, connectors: Any) -> None:
        dest = self.folder / f"step-{step:06d}.mp4" if self.folder is not None else None
        reel = self.render(transformer, connectors, dest)
        if self.rendered is not None:
            self.rendered(step, reel)
