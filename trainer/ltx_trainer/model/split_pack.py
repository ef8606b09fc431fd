"""LTX-2.5 as Lightricks publishes it: one file per component instead of 2.3's single file.

- the transformer (`ltx-2.5-22b-dev-transformer-bf16.safetensors`): the transformer and
  the connectors' transformers, `model.diffusion_model.*`, under their original names;
- the text encoder (`gemma4-12b-with-proj-ltx-2.5-bf16.safetensors`): the Lightricks-tuned
  Gemma 4 under its transformers names with the connectors' input projection bundled
  (`text_embedding_projection.*`), and `gemma_source_checkpoint` in its metadata naming
  the tuned encoder (`gemma4-12b-ltx-v1`): a stock Gemma 4 has neither and is refused;
- the video VAE: the encoder (`vae.encoder.*`) with the diffusion decoder
  (`ltx-2.5-video-vae-bf16.safetensors`) or with the convolutional one
  (`ltx-2.5-video-vae-conv-bf16.safetensors`);
- the audio VAE with the vocoder (`ltx-2.5-audio-vae-bf16.safetensors`).

`--model` names the transformer file; the others are found beside it under those names
(in its folder, or in the published layout's `text_encoders/` and `vae/` folders next to
its `diffusion_models/`), or named by `--text-encoder`, `--video-vae`, `--audio-vae`.
`describe_split_pack` checks every file from its header and metadata before any weight is
read: a missing component, a file of another release (a 2.3 file mixed in) or a stock
Gemma 4 is refused naming the file. Components load into the diffusers classes through
the same key maps as the single file, laid out without memory first.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .profile import CONVOLUTIONAL, DIFFUSION, ModelProfile, profile_from_shapes
from .shapes import DIFFUSION_DECODER, LTX_2_5, LTX_GEMMA_4, ModelShapes, build_meta
from .single_file import (
    _TRANSFORMER_NAMES,
    PROJECTION_PREFIX,
    SHAPES_METADATA,
    TRANSFORMER_PREFIX,
    CheckpointError,
    _connectors_state,
    _inverse,
    _rename,
    _vae_state,
    _vocoder_state,
    original_key,
)

log = logging.getLogger(__name__)

#: the published file names of each part beside the transformer (the video VAE: either)
TEXT_ENCODER_FILE = "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors"
VIDEO_VAE_FILES = {DIFFUSION: "ltx-2.5-video-vae-bf16.safetensors",
                   CONVOLUTIONAL: "ltx-2.5-video-vae-conv-bf16.safetensors"}
AUDIO_VAE_FILE = "ltx-2.5-audio-vae-bf16.safetensors"
#: the published layout's folders: the transformer in diffusion_models/, these beside it
PUBLISHED_FOLDERS = {"text_encoder": "text_encoders", "video_vae": "vae", "audio_vae": "vae"}
#: how a user names each part (command-line flag, spec field)
NAMED_BY = {"text_encoder": ("--text-encoder", "textEncoder"),
            "video_vae": ("--video-vae", "videoVae"), "audio_vae": ("--audio-vae", "audioVae")}
VERSION_METADATA = "model_version"
GEMMA_SOURCE_METADATA = "gemma_source_checkpoint"
TOKENIZER_METADATA = "ltx_extend_tokenizer"  # {file name: text} of the packed tokenizer
DIFFUSION_DECODER_PREFIX = "diffusion_decoder."
RELEASE = "2.5"


@dataclass(frozen=True)
class Header:
    path: Path
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> Header:
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            raise CheckpointError(f"{path} does not exist or is not a file")
        try:
            with safe_open(path, framework="pt") as file:
                return cls(path, {k: tuple(file.get_slice(k).get_shape()) for k in file.keys()},
                           file.metadata() or {})
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a safetensors file: {exc}") from None

    def has(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.shapes)

    @property
    def release(self) -> str | None:
        """The release the file's metadata names ("2.5" for "2.5.0"), if it names one."""
        version = self.metadata.get(VERSION_METADATA)
        return ".".join(version.split(".")[:2]) if version else None


def is_split_transformer(path: Path) -> bool:
    """Whether a `.safetensors` file is a split pack's transformer (it holds no VAE), not
    a single file."""
    header = Header.read(Path(path))
    return header.has(TRANSFORMER_PREFIX) and not header.has("vae.")


@dataclass(frozen=True)
class SplitPackModel:
    """A checked LTX-2.5 split pack: the files of each component, its shapes and profile."""

    files: dict[str, Path]  # component → the file it is read from
    shapes: ModelShapes
    profile: ModelProfile
    keys: dict[str, dict[str, str]] = field(repr=False)  # component → {file key: its name}
    tokenizer: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return self.files["transformer"]

    @property
    def version(self) -> str:
        return self.profile.version

    @property
    def name(self) -> str:
        """The transformer file's name: what a LoRA's config records as its base model."""
        return self.checkpoint.name

    def load(self, name: str, device: torch.device, dtype: torch.dtype | None = None) -> Any:
        """One component, in eval mode and frozen, on `device` (`loader.Model.load`)."""
        from .device import compute_dtype

        dtype = dtype or compute_dtype(device)
        if name == "tokenizer":
            from transformers import AutoTokenizer

            with tempfile.TemporaryDirectory(prefix="ltx-extend-tokenizer-") as folder:
                for file_name, text in self.tokenizer.items():
                    (Path(folder) / file_name).write_text(text)
                return AutoTokenizer.from_pretrained(folder)
        if name == "scheduler":
            from diffusers import FlowMatchEulerDiscreteScheduler

            from .shapes import SCHEDULER

            return FlowMatchEulerDiscreteScheduler.from_config(
                self.shapes.configs.get("scheduler", SCHEDULER))
        if name not in self.keys:
            raise CheckpointError(f"the LTX-2.5 pack of {self.checkpoint} has no {name}")
        return self._build(name, device, dtype).eval().requires_grad_(False)

    def _build(self, name: str, device: torch.device, dtype: torch.dtype) -> Any:
        from accelerate import init_empty_weights
        from safetensors import safe_open

        from .shapes import default_dtype, instantiate

        state = {}
        for key, path in self.keys[name].items():
            with safe_open(path, framework="pt", device=str(device)) as file:
                state[key] = file.get_tensor(key)
        state = _to_diffusers(name, state, self.shapes)
        with init_empty_weights(include_buffers=False), default_dtype(dtype):
            model = instantiate(self.shapes, name)
        encoder_only = name == "vae" and CONVOLUTIONAL not in self.profile.decoders
        if encoder_only:  # the pack's VAE carries the diffusion decoder, not this one
            model.decoder = None
        try:
            result = model.load_state_dict(state, strict=False, assign=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.files[name]}: the {name} does not load: {exc}"
                                  ) from None
        # Gemma's output head is its embedding: not stored
        tied = {"lm_head.weight"} if name == "text_encoder" else set()
        if set(result.missing_keys) - tied or result.unexpected_keys:
            raise CheckpointError(f"{self.files[name]}: the {name} does not load: missing "
                                  f"{result.missing_keys[:3]}, unexpected "
                                  f"{result.unexpected_keys[:3]}")
        if hasattr(model, "tie_weights"):
            model.tie_weights()
        return torch.nn.Module.to(model, device=device, dtype=dtype)


def _to_diffusers(name: str, original: dict[str, torch.Tensor], shapes: ModelShapes
                  ) -> dict[str, torch.Tensor]:
    if name == "transformer":
        names = _inverse(_TRANSFORMER_NAMES)
        return {_rename(k.removeprefix(TRANSFORMER_PREFIX), names): v for k, v in original.items()}
    if name == "connectors":
        return _connectors_state(original)
    if name == "vae":
        return _vae_state(original, shapes)
    if name == "audio_vae":
        from diffusers.loaders.single_file_utils import convert_ltx2_audio_vae_to_diffusers

        return convert_ltx2_audio_vae_to_diffusers(original)
    if name == "vocoder":
        return _vocoder_state(original)
    if name == DIFFUSION_DECODER:
        return {k.removeprefix(DIFFUSION_DECODER_PREFIX): v for k, v in original.items()}
    return original  # the text encoder: transformers' own names


def pack_key(component: str, key: str, shapes: ModelShapes) -> str:
    """The name of a diffusers parameter in its split-pack file."""
    if component == DIFFUSION_DECODER:
        return DIFFUSION_DECODER_PREFIX + key
    if component == "text_encoder":
        return key
    return original_key(component, key, shapes)


def expected_keys(shapes: ModelShapes, name: str, *, conv_decoder: bool = True
                  ) -> dict[str, tuple[int, ...]]:
    """{file key: shape} of a component (built on the meta device: no memory)."""
    module = build_meta(shapes, name)
    if name == "vae" and not conv_decoder:
        module.decoder = None
    state = module.state_dict()
    if name == "text_encoder" and shapes.configs["text_encoder"].get("tie_word_embeddings", True):
        state.pop("lm_head.weight", None)  # tied to the embedding: not stored
    return {pack_key(name, k, shapes): tuple(v.shape) for k, v in state.items()}


# -- finding and checking the files ----------------------------------------------------

def _beside(transformer: Path, part: str, names: tuple[str, ...]) -> list[Path]:
    folders = [transformer.parent, transformer.parent.parent / PUBLISHED_FOLDERS[part]]
    return [folder / name for name in names for folder in folders if (folder / name).is_file()]


def locate_parts(transformer: Path, text_encoder: Path | None = None,
                 video_vae: Path | None = None, audio_vae: Path | None = None
                 ) -> dict[str, list[Path]]:
    """Each part's file(s): as named, else found beside the transformer under its published
    name (both video VAE files where both lie there); a missing part is refused."""
    named = {"text_encoder": text_encoder, "video_vae": video_vae, "audio_vae": audio_vae}
    published = {"text_encoder": (TEXT_ENCODER_FILE,),
                 "video_vae": tuple(VIDEO_VAE_FILES.values()), "audio_vae": (AUDIO_VAE_FILE,)}
    parts = {}
    for part, path in named.items():
        found = [Path(path)] if path is not None else _beside(transformer, part, published[part])
        if not found:
            flag, spec_field = NAMED_BY[part]
            raise CheckpointError(
                f"the LTX-2.5 pack of {transformer} has no {part.replace('_', ' ')} file: put "
                f"{' or '.join(published[part])} beside it (or in ../{PUBLISHED_FOLDERS[part]}/), "
                f"or name it with {flag} (spec.model.{spec_field})")
        parts[part] = found[:1] if part != "video_vae" else found
    return parts


def _check_release(header: Header, what: str) -> None:
    """A file of another release is refused by its metadata or, for a transformer, by its
    keys (2.3's video feed-forward has biases and its prompt modulation a timestep MLP)."""
    if header.has("vae.") and header.has(TRANSFORMER_PREFIX):
        raise CheckpointError(f"{header.path} is an LTX-2.3 single file (transformer and VAEs in "
                              f"one), not LTX-2.5's {what}: the two releases do not mix")
    if header.release not in (None, RELEASE):
        raise CheckpointError(f"{header.path} is an LTX-{header.release} file "
                              f"({VERSION_METADATA} {header.metadata[VERSION_METADATA]}), not "
                              f"LTX-2.5's {what}: the two releases do not mix")
    if what == "transformer" and (
            header.has(f"{TRANSFORMER_PREFIX}prompt_adaln_single.")
            or f"{TRANSFORMER_PREFIX}transformer_blocks.0.ff.net.0.proj.bias" in header.shapes):
        raise CheckpointError(f"{header.path} is an LTX-2.3 transformer (it has 2.3's "
                              "feed-forward biases and prompt modulation), not LTX-2.5's")


def _check_shapes(header: Header, expected: dict[str, tuple[int, ...]], what: str,
                  shapes: ModelShapes) -> None:
    missing = [k for k in expected if k not in header.shapes]
    if missing:
        raise CheckpointError(f"{header.path} lacks {len(missing)} of the {len(expected)} {what} "
                              f"weights of {shapes.name} (first: {missing[0]})")
    wrong = [k for k, shape in expected.items() if header.shapes[k] != shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{header.path}: {len(wrong)} {what} weights do not have "
                              f"{shapes.name}'s shapes ({k} is {list(header.shapes[k])}, "
                              f"expected {list(expected[k])})")


def _check_text_encoder(header: Header, shapes: ModelShapes) -> dict[str, str]:
    """The LTX-tuned Gemma 4 (its projection bundled, its source named), not a stock one;
    returns its packed tokenizer."""
    source = header.metadata.get(GEMMA_SOURCE_METADATA)
    gemma = json.loads(source).get("gemma_version") if source else None
    if not header.has(PROJECTION_PREFIX) or gemma != LTX_GEMMA_4:
        raise CheckpointError(
            f"{header.path} is not the LTX-tuned Gemma 4 that LTX-2.5 reads its prompt with "
            f"(it has {'no' if not header.has(PROJECTION_PREFIX) else 'the'} bundled text "
            f"projection and names {gemma or 'no'} source model, not {LTX_GEMMA_4}): a stock "
            f"Gemma 4 is no substitute; give {TEXT_ENCODER_FILE}")
    tokenizer = json.loads(header.metadata.get(TOKENIZER_METADATA, "{}"))
    beside = header.path.parent / "tokenizer.json"
    if not tokenizer and beside.is_file():
        tokenizer = {"tokenizer.json": beside.read_text()}
    if "tokenizer.json" not in tokenizer:
        raise CheckpointError(f"{header.path} carries no tokenizer (none packed in its metadata "
                              "and no tokenizer.json beside it)")
    return tokenizer


def describe_split_pack(transformer: Path, text_encoder: Path | None = None,
                        video_vae: Path | None = None, audio_vae: Path | None = None
                        ) -> SplitPackModel:
    """Check an LTX-2.5 split pack from its files' headers and metadata alone (no weight is
    read); raises CheckpointError naming the file and what is wrong."""
    transformer = Path(transformer)
    head = Header.read(transformer)
    _check_release(head, "transformer")
    shapes = (ModelShapes.from_json(head.metadata[SHAPES_METADATA])
              if SHAPES_METADATA in head.metadata else LTX_2_5)
    parts = locate_parts(transformer, text_encoder, video_vae, audio_vae)
    headers = {part: [Header.read(p) for p in paths] for part, paths in parts.items()}
    for part, found in headers.items():
        for header in found:
            _check_release(header, part.replace("_", " "))
    text, audio = headers["text_encoder"][0], headers["audio_vae"][0]
    tokenizer = _check_text_encoder(text, shapes)  # a stock Gemma 4 is named as such
    decoders = {(DIFFUSION if h.has(DIFFUSION_DECODER_PREFIX) else CONVOLUTIONAL): h
                for h in headers["video_vae"]}
    connector_keys = expected_keys(shapes, "connectors")
    holders = {"transformer": [head], "connectors": [head, text], "text_encoder": [text],
               "audio_vae": [audio], "vocoder": [audio],
               "vae": [decoders.get(CONVOLUTIONAL) or decoders[DIFFUSION]]}
    if DIFFUSION in decoders:
        holders[DIFFUSION_DECODER] = [decoders[DIFFUSION]]
    keys: dict[str, dict[str, str]] = {}
    for name, files in holders.items():
        expected = (connector_keys if name == "connectors" else
                    expected_keys(shapes, name, conv_decoder=CONVOLUTIONAL in decoders))
        for header in files:
            claimed = {k: s for k, s in expected.items()
                       if name != "connectors" or k.startswith(PROJECTION_PREFIX) == (
                           header is text)}
            _check_shapes(header, claimed, name.replace("_", " "), shapes)
            keys.setdefault(name, {}).update(dict.fromkeys(claimed, header.path))
    if DIFFUSION not in decoders:
        shapes = ModelShapes(shapes.name, {n: c for n, c in shapes.configs.items()
                                           if n != DIFFUSION_DECODER})
    try:
        profile = profile_from_shapes(shapes, decoders=tuple(sorted(decoders)))
    except ValueError as exc:
        raise CheckpointError(f"{transformer}: {exc}") from None
    if profile.version != RELEASE:
        raise CheckpointError(f"{transformer}: its configs ({shapes.name}) are LTX-"
                              f"{profile.version}'s, not LTX-2.5's")
    files = {name: next(iter(found.values())) for name, found in keys.items()}
    log.info("LTX-2.5 pack: %s", ", ".join(f"{n} {p.name}" for n, p in files.items()))
    return SplitPackModel(files, shapes, profile, keys, tokenizer)
