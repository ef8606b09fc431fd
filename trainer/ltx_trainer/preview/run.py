"""Rendering the validation previews of a training into a reel."""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ltx_contract.spec import TrainingSpec
from ltx_contract.suffix import SuffixWindow

from ..dataset.media import read_wav
from ..training.encode import load_text, read_video
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


def _frames(video: torch.Tensor) -> Any:
    return ((video[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()


def render_reel(spec: TrainingSpec, dataset_dir: Path, cache_dir: Path, models: Models,
                dest: Path, *, steps: int, seed: int, max_sequence_length: int) -> Path | None:
    """Extend every validation clip backward and write the combined reel to `dest`."""
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    if not manifest["validation"]:
        return None
    was_training = models.transformer.training
    models.transformer.eval()
    parts = []
    negative = load_text(cache_dir, spec.validation_negative_prompt)
    for entry in manifest["validation"]:
        suffix = SuffixWindow(entry["frames"], entry["frameRate"], spec.conditioning_frames)
        closing = read_video(dataset_dir / entry["video"])
        audio, rate = (read_wav(dataset_dir / entry["audio"]["path"]) if spec.with_audio
                       else (None, None))
        result = extend_backward(
            models, closing, None if audio is None else torch.from_numpy(audio),
            load_text(cache_dir, entry["prompt"]), negative, suffix=suffix,
            with_audio=spec.with_audio, steps=steps, stg_scale=spec.stg_scale,
            seed=seed + entry["index"], max_sequence_length=max_sequence_length)
        cut = suffix.first_suffix_frame
        part = ReelPart(lead_in=result.frames[:cut], closing=_frames(closing)[cut:],
                        prompt=entry["prompt"])
        if spec.with_audio:
            split = round(cut / suffix.frame_rate * result.sample_rate)
            part.lead_in_audio, part.lead_in_rate = result.audio[:, :split], result.sample_rate
            part.closing_audio = audio[:, round(cut / suffix.frame_rate * rate):]
            part.closing_rate = rate
        parts.append(part)
        log.info("preview %d rendered", entry["index"])
    models.transformer.train(was_training)
    gc.collect()
    return write_reel(parts, dest, manifest["validation"][0]["frameRate"])
