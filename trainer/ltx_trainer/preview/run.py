"""Rendering the validation previews of a training into a reel: each validation clip
extended backward with the LoRA as it is now (the live trainer's transformer)."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import torch

from ltx_contract.manifest import Manifest
from ltx_contract.spec import TrainingSpec

from ..codec.latents import to_frames
from ..codec.text import load_text
from ..codec.video import read_video
from ..dataset.media import read_wav
from ..model.profile import ModelProfile
from .reel import ReelPart, write_reel
from .sampler import Models, extend_backward

log = logging.getLogger(__name__)


def load_preview_models(model_dir: Path, transformer: Any, connectors: Any,
                        device: torch.device, with_audio: bool) -> Models:
    from ..model.loader import load_component

    return Models(
        transformer=transformer, connectors=connectors,
        vae=load_component(model_dir, "vae", device),
        audio_vae=load_component(model_dir, "audio_vae", device) if with_audio else None,
        vocoder=load_component(model_dir, "vocoder", device) if with_audio else None,
        scheduler=load_component(model_dir, "scheduler", device),
    )


def render_reel(spec: TrainingSpec, dataset_dir: Path, cache_dir: Path, models: Models,
                profile: ModelProfile, dest: Path, *, steps: int, seed: int,
                max_sequence_length: int) -> Path | None:
    """Extend every validation clip backward and write the combined reel to `dest`
    (None when the training has no validation clips)."""
    manifest = Manifest.read(dataset_dir)
    if not manifest.validation:
        return None
    was_training = models.transformer.training
    models.transformer.eval()
    parts = []
    negative = load_text(cache_dir, spec.validation_negative_prompt)
    for entry in manifest.validation:
        suffix = manifest.suffix_window(entry)
        closing = read_video(dataset_dir / entry.video)
        audio, rate = (read_wav(dataset_dir / entry.audio.path) if spec.with_audio
                       else (None, None))
        result = extend_backward(
            models, profile, closing, None if audio is None else torch.from_numpy(audio),
            load_text(cache_dir, entry.prompt), negative, suffix=suffix,
            with_audio=spec.with_audio, steps=steps, stg_scale=spec.stg_scale,
            seed=seed + entry.index, max_sequence_length=max_sequence_length)
        cut = suffix.first_suffix_frame
        part = ReelPart(lead_in=result.frames[:cut], closing=to_frames(closing)[cut:],
                        prompt=entry.prompt)
        if spec.with_audio:
            split = round(cut / suffix.frame_rate * result.sample_rate)
            part.lead_in_audio, part.lead_in_rate = result.audio[:, :split], result.sample_rate
            part.closing_audio = audio[:, round(cut / suffix.frame_rate * rate):]
            part.closing_rate = rate
        parts.append(part)
        log.info("preview %d rendered", entry.index)
    models.transformer.train(was_training)
    gc.collect()
    dest.parent.mkdir(parents=True, exist_ok=True)
    path = write_reel(parts, dest, manifest.validation[0].frame_rate)
    log.info("validation reel %s", path)
    return path
