"""`ltx-extend extend`: extend a closing clip backward with a trained LoRA."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltx_contract.outcomes import InvalidInput
from ltx_contract.spec import DEFAULT_NEGATIVE_PROMPT, frame_size
from ltx_contract.suffix import SuffixWindow

from ..codec.text import DEFAULT_TEXT_TOKENS, encode_texts, text_key
from ..dataset.media import Undecodable, frames_in, probe
from ..dataset.prepare import fit_closing_clip
from ..model.lora import check_lora_version, load_lora, read_lora_config
from .ending import FittedClip, write_extension
from .sampler import extend_backward


@dataclass
class ExtendRequest:
    model: Any  # a folder or a single-file checkpoint (resolved: a loader.Model); None: tiny
    lora: Path | None
    clip: Path
    prompt: str
    output: Path
    frames: int = 89
    fps: int = 24
    resolution: str = "high"
    aspect: str = "1:1"
    audio: bool = False
    conditioning_frames: int | None = None  # default: the LoRA's
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    steps: int = 30
    stg_scale: float = 1.0
    seed: int = 0
    max_sequence_length: int | None = None  # default: the LoRA's, else 1024
    text_encoder: Path | None = None  # 2.3: the single file's Gemma-3 folder; 2.5: its file
    video_vae: Path | None = None  # 2.5's pack parts, where not beside the transformer file
    audio_vae: Path | None = None
    decoded_ending: bool = False  # end with the model's decode of the clip, not the clip


def extend_clip(request: ExtendRequest, device: torch.device,
                resolve_model: Callable[..., Any]) -> Path:
    """Check the clip, then generate; the model (`resolve_model(model, text_encoder=…)`,
    `source.resolve_model`) is resolved only once the input is known to be good, and
    refused before anything is encoded when it cannot be used."""
    from .run import load_preview_models

    config = read_lora_config(request.lora)
    cf = request.conditioning_frames or int(config.get("conditioningFrames", 8))
    length = request.max_sequence_length or int(config.get("maxSequenceLength",
                                                           DEFAULT_TEXT_TOKENS))
    suffix = SuffixWindow(request.frames, request.fps, cf)
    try:
        info = probe(request.clip)
    except Undecodable as exc:
        raise InvalidInput(f"the clip {request.clip} cannot be decoded ({exc})") from None
    if frames_in(info.duration, request.fps) < cf:
        raise InvalidInput(f"The clip must be at least conditioningFrames ({cf}) frames long "
                           f"at {request.fps} fps")
    if request.audio and not info.has_audio:
        raise InvalidInput("--audio needs a clip with an audio track")
    with tempfile.TemporaryDirectory() as scratch:
        video_path, wav = Path(scratch) / "closing.mp4", Path(scratch) / "closing.wav"
        fit_closing_clip(request.clip, info, request.frames, request.fps,
                         frame_size(request.resolution, request.aspect), video_path,
                         wav if request.audio else None, normalize=True, preserve_pitch=True)
        fitted = FittedClip.read(video_path, wav if request.audio else None)
    model = resolve_model(request.model, text_encoder=request.text_encoder,
                          video_vae=request.video_vae, audio_vae=request.audio_vae)
    profile = model.profile
    if request.lora is not None:  # before anything is encoded
        check_lora_version(request.lora, profile.name)
    texts = encode_texts(model, [request.prompt, request.negative_prompt], device, length)
    transformer = model.load("transformer", device)
    if request.lora is not None:
        load_lora(transformer, request.lora, model_version=profile.name)
    models = load_preview_models(model, transformer, model.load("connectors", device), device,
                                 request.audio)
    result = extend_backward(
        models, profile, fitted.pixels(), fitted.waveform(), texts[text_key(request.prompt)],
        texts[text_key(request.negative_prompt)], suffix=suffix, with_audio=request.audio,
        steps=request.steps, stg_scale=request.stg_scale, seed=request.seed,
        max_sequence_length=length)
    return write_extension(result, fitted, suffix, request.output,
                           decoded_ending=request.decoded_ending)
