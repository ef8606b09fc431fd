"""The model's version and everything it implies, read once from the model's configs.

LTX-2.0 and LTX-2.3 share the diffusers classes but are called differently. 2.3 has
gated attention, prompt cross-attention modulated by the noise level (`sigma` and
`audio_sigma`), per-modality connector projections instead of the transformer's caption
projection, the cross-modality timestep (`use_cross_timestep=True`, as diffusers'
`LTX2Pipeline` calls it) and the bandwidth-extending vocoder. LTX-2.5 keeps 2.3's call and
widths but drops the video feed-forward biases (`ff_bias=False`, the mark it is read by),
makes the prompt modulation a static table (`use_prompt_adaln_single=False`), reads its
prompt through a Lightricks-tuned Gemma 4 instead of Gemma 3, and ships a diffusion video
decoder beside (or instead of) the convolutional one. Training, previews and `extend` all
take these from one `ModelProfile`; no call site decides them itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltx_contract.rules import TEMPORAL_COMPRESSION

from .release import Version, transformer_version, version_name

#: STG perturbs one self-attention block; the official pipelines name it for the 48-block
#: model (29 for LTX-2.0, 28 for LTX-2.3, and 2.5 keeps 2.3's block) and a shallower model
#: takes the same depth.
STG_BLOCK_OF_48 = {"2.0": 29, "2.3": 28, "2.5": 28}
#: the text encoder family each release reads its prompt with (`model_type` prefix)
TEXT_ENCODERS = {"2.0": "gemma3", "2.3": "gemma3", "2.5": "gemma4"}
#: video decoders: the VAE's own convolutional one, LTX-2.5's diffusion decoder
CONVOLUTIONAL, DIFFUSION = "convolutional", "diffusion"
#: the latent compression (time, height, width) the contract's frame rules are made for
LATENT_SCALE = (TEMPORAL_COMPRESSION, 32, 32)


@dataclass(frozen=True)
class Guidance:
    """The validation guidance of the official recipe (Lightricks' suffix-LoRA config and
    diffusers' `LTX2Pipeline` defaults): per-modality CFG, STG on one block, modality
    (isolation) guidance and guidance rescale, all in x0 space."""

    video_cfg: float = 3.0
    audio_cfg: float = 7.0
    modality: float = 3.0
    rescale: float = 0.7
    stg_blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class TimestepShift:
    """The scheduler's resolution-dependent shift: mu grows linearly with the tokens."""

    base_seq_len: int = 1024
    max_seq_len: int = 4096
    base_shift: float = 0.95
    max_shift: float = 2.05

    def mu(self, tokens: int) -> float:
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return self.base_shift + slope * (tokens - self.base_seq_len)


@dataclass(frozen=True)
class ModelProfile:
    version: Version
    num_layers: int
    use_cross_timestep: bool  # cross-modal attention modulated by the other stream's sigma
    prompt_modulation: bool  # prompt cross-attention modulated by sigma / audio_sigma
    per_modality_connectors: bool
    vocoder_class: str
    dynamic_shifting: bool  # False: a distilled checkpoint's fixed schedule
    shift: TimestepShift
    guidance: Guidance
    timestep_scale: int = 1000  # the transformer's timestep_scale_multiplier
    text_encoder: str = "gemma3"  # the text encoder's model_type
    text_features: tuple[int, int] = (3840, 49)  # the connectors' input: width, hidden states
    vae_scale_factors: tuple[int, int, int] = (8, 32, 32)  # time, height, width
    decoders: tuple[str, ...] = (CONVOLUTIONAL,)  # the video decoders the model ships
    #: LTX-2.5's learned embedding for latent frames that encode one pixel frame: ltx-core's
    #: inference adds it to latent frame 0 of every generation, its trainer never does
    first_frame_marker: bool = False

    @property
    def name(self) -> str:
        return version_name(self.version)


def stg_blocks(version: Version, num_layers: int) -> tuple[int, ...]:
    return (min(num_layers - 1, round(STG_BLOCK_OF_48[version] * num_layers / 48)),)


def profile_from_configs(transformer: dict[str, Any], connectors: dict[str, Any],
                         scheduler: dict[str, Any], vocoder_class: str = "LTX2Vocoder",
                         text_encoder: dict[str, Any] | None = None,
                         decoders: tuple[str, ...] = (CONVOLUTIONAL,)) -> ModelProfile:
    """The profile of a model from its components' configs (dicts of their JSON); a text
    encoder of another release than the transformer's is refused (ValueError)."""
    per_modality = bool(connectors.get("per_modality_projections", False))
    prompt_embeddings = bool(transformer.get("use_prompt_embeddings", True))
    if per_modality == prompt_embeddings:
        raise ValueError(
            "the model's transformer and connectors are of different versions: "
            f"connectors per_modality_projections={per_modality} needs transformer "
            f"use_prompt_embeddings={not per_modality}")
    version = transformer_version(transformer)
    if (version == "2.0") == per_modality:
        raise ValueError(f"the model's transformer is LTX-{version}'s but its connectors are "
                         f"{'LTX-2.0' if not per_modality else 'LTX-2.3/2.5'}'s")
    features = (int(connectors.get("caption_channels", 3840)),
                int(connectors.get("text_proj_in_factor", 49)))
    encoder = TEXT_ENCODERS[version]
    if text_encoder is not None:
        encoder = str(text_encoder.get("model_type", "gemma3"))
        if not encoder.startswith(TEXT_ENCODERS[version]):
            raise ValueError(f"the model's text encoder is {encoder!r}, but an LTX-{version} "
                             f"transformer reads its prompt with {TEXT_ENCODERS[version]}")
        text = text_encoder.get("text_config") or {}
        given = (text.get("hidden_size"), int(text.get("num_hidden_layers", -1)) + 1)
        if given != features:
            raise ValueError(f"the model's text encoder gives {given[0]}-wide features from "
                             f"{given[1]} hidden states; its connectors take {features[0]} "
                             f"from {features[1]}")
    factors = tuple(int(f) for f in transformer.get("vae_scale_factors", (8, 32, 32)))
    if factors != LATENT_SCALE:
        raise ValueError(f"the model's VAE compresses {factors[0]}x in time and "
                         f"{factors[1]}x{factors[2]} in space; the frame and suffix rules are "
                         f"made for {LATENT_SCALE[0]}x and {LATENT_SCALE[1]}x{LATENT_SCALE[2]}")
    num_layers = int(transformer.get("num_layers", 48))
    return ModelProfile(
        version=version, num_layers=num_layers,
        use_cross_timestep=version != "2.0",
        prompt_modulation=bool(transformer.get("cross_attn_mod")
                               or transformer.get("audio_cross_attn_mod")),
        per_modality_connectors=per_modality, vocoder_class=vocoder_class,
        dynamic_shifting=bool(scheduler.get("use_dynamic_shifting", False)),
        shift=TimestepShift(
            base_seq_len=int(scheduler.get("base_image_seq_len", 1024)),
            max_seq_len=int(scheduler.get("max_image_seq_len", 4096)),
            base_shift=float(scheduler.get("base_shift", 0.95)),
            max_shift=float(scheduler.get("max_shift", 2.05))),
        guidance=Guidance(stg_blocks=stg_blocks(version, num_layers)),
        timestep_scale=int(transformer.get("timestep_scale_multiplier", 1000)),
        text_encoder=encoder, text_features=features,
        vae_scale_factors=factors, decoders=decoders,
        first_frame_marker=bool(transformer.get("use_keyframes_abs_pos_embedding", False)),
    )


def _config(folder: Path, name: str, filename: str) -> dict[str, Any]:
    path = folder / name / filename
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {name}/{filename}")
    return json.loads(path.read_text())


def profile_from_shapes(shapes: Any, decoders: tuple[str, ...] | None = None) -> ModelProfile:
    """The profile of a release's shapes (`shapes.ModelShapes`): a single file's, a split
    pack's (`decoders`: those its files ship), or random weights built from them."""
    from .shapes import SCHEDULER, component_class

    return profile_from_configs(shapes.config("transformer"), shapes.config("connectors"),
                                dict(shapes.configs.get("scheduler", SCHEDULER)),
                                vocoder_class=component_class(shapes, "vocoder").__name__,
                                text_encoder=shapes.configs.get("text_encoder"),
                                decoders=decoders or _decoders(shapes))


def _decoders(shapes: Any) -> tuple[str, ...]:
    from .shapes import DIFFUSION_DECODER

    return (CONVOLUTIONAL, *((DIFFUSION,) if DIFFUSION_DECODER in shapes.configs else ()))


def folder_profile(folder: Path) -> ModelProfile:
    """The profile of a diffusers model folder, read from its configs."""
    index = json.loads((folder / "model_index.json").read_text())
    vocoder = index.get("vocoder") or [None, "LTX2Vocoder"]
    text_config = folder / "text_encoder" / "config.json"
    decoders = (CONVOLUTIONAL, *((DIFFUSION,) if (index.get("diffusion_decoder") or [None])[0]
                                else ()))
    return profile_from_configs(
        _config(folder, "transformer", "config.json"),
        _config(folder, "connectors", "config.json"),
        _config(folder, "scheduler", "scheduler_config.json"),
        vocoder_class=vocoder[1] or "LTX2Vocoder",
        text_encoder=json.loads(text_config.read_text()) if text_config.is_file() else None,
        decoders=decoders)
