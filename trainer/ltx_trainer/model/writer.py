"""Random-weight models at LTX-2's real shapes (`shapes.py`) written to disk: the
diffusers folder layout, or the official single-file layout (`single_file.py`) with its
Gemma-3 folder, or LTX-2.5's split pack (`ltx-extend tiny-model --shapes` writes them,
`commands/tiny_model.py`).

Kept apart from `shapes.py` so that the single-file reader can use the shapes without
the writer's import of its key mapping closing a circle."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .shapes import COMPONENTS, SCHEDULER, ModelShapes, build_component, real_shapes

if TYPE_CHECKING:
    import torch

MARKER = "ltx-extend-real-shapes.json"
#: diffusers folder; 2.0/2.3's single file + Gemma-3 folder; 2.5's one file per component
LAYOUTS = ("diffusers", "single-file", "split")


def write_real_shape_model(dest: Path, shapes: ModelShapes | str = "ltx-2.3",
                           layout: str = "diffusers", seed: int = 0) -> Path:
    """Write a random-weight model of `shapes` (a release name is cut to one block) and
    return its path: the folder for the diffusers layout, the checkpoint file for the
    single-file layout (its Gemma-3 folder beside it, `single_file.GEMMA_DIR`), the
    transformer file for the split layout (LTX-2.5's published layout around it)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose {' or '.join(LAYOUTS)}")
    return write_layouts({layout: dest}, shapes, seed)[layout]


def write_layouts(dests: Mapping[str, Path], shapes: ModelShapes | str = "ltx-2.3",
                  seed: int = 0) -> dict[str, Path]:
    """The same random weights written in each layout of `dests` (layout → folder).

    The diffusers folder is written one component at a time (one in memory at once);
    the single file is then assembled from its files, memory-mapped, under the original
    key names (staged in a temporary folder when no diffusers layout is asked for)."""
    import tempfile

    if isinstance(shapes, str):
        shapes = real_shapes(shapes)
    for layout in dests:
        if layout not in layouts_of(shapes):
            raise ValueError(f"{shapes.name} is not published in the {layout} layout: choose "
                             f"{' or '.join(layouts_of(shapes))}")
    folder, single, split = (dests.get(layout) for layout in LAYOUTS)
    for dest in dests.values():
        dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    with contextlib.ExitStack() as stack:
        staging = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".components-", dir=single or split)))
        _write_diffusers(staging, shapes, seed)
        if folder is not None:
            paths["diffusers"] = folder
        if single is not None:
            paths["single-file"] = _write_single_file(staging, single, shapes)
        if split is not None:
            paths["split"] = _write_split_pack(staging, split, shapes)
    for layout, dest in dests.items():
        (dest / MARKER).write_text(json.dumps({"shapes": shapes.name, "layout": layout,
                                               "seed": seed, "kind": "real-shapes-random"}))
    return paths


def layouts_of(shapes: ModelShapes) -> tuple[str, ...]:
    """The layouts a release is published in: LTX-2.5 as a split pack, the others as one
    single file; every release as a diffusers folder."""
    return ("diffusers", "split" if shapes.version == "2.5" else "single-file")


def _write_diffusers(folder: Path, shapes: ModelShapes, seed: int) -> None:
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer

    from .tiny import _tokenizer

    index: dict[str, Any] = {"_class_name": "LTX2Pipeline",
                             "_diffusers_version": diffusers.__version__}
    for name in shapes.components:
        model = build_component(shapes, name, seed=seed)
        model.save_pretrained(folder / name)
        library = {"connectors": "ltx2", "vocoder": "ltx2", "text_encoder": "transformers"}
        index[name] = [library.get(name, "diffusers"), type(model).__name__]
        del model
    _tokenizer(folder / "tokenizer")
    tokenizer = type(AutoTokenizer.from_pretrained(folder / "tokenizer")).__name__
    FlowMatchEulerDiscreteScheduler.from_config(shapes.configs.get("scheduler", SCHEDULER)
                                                ).save_pretrained(folder / "scheduler")
    index.update(scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"],
                 tokenizer=["transformers", tokenizer])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))


def _write_single_file(folder: Path, dest: Path, shapes: ModelShapes) -> Path:
    """The single file and its Gemma-3 folder (weights and tokenizer together, as Gemma
    is released) from a diffusers folder."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from .single_file import (
        CONFIG_METADATA,
        GEMMA_DIR,
        SHAPES_METADATA,
        release_config,
        to_original,
    )

    original: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as files:
        for name in COMPONENTS[:-1]:
            for part in sorted((folder / name).glob("*.safetensors")):
                file = files.enter_context(safe_open(part, framework="pt"))
                original.update(to_original(name, {k: file.get_tensor(k) for k in file.keys()},
                                            shapes))
        path = dest / f"{shapes.name}.safetensors"
        save_file(original, path, metadata={SHAPES_METADATA: shapes.to_json(),
                                            CONFIG_METADATA: json.dumps(release_config(shapes))})
    gemma = dest / GEMMA_DIR
    shutil.copytree(folder / "text_encoder", gemma, dirs_exist_ok=True)
    shutil.copytree(folder / "tokenizer", gemma, dirs_exist_ok=True)
    return path


def _read_folder(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    state = {}
    for part in sorted((folder / name).glob("*.safetensors")):
        with safe_open(part, framework="pt") as file:
            state.update({k: file.get_tensor(k) for k in file.keys()})
    return state


def _write_split_pack(folder: Path, dest: Path, shapes: ModelShapes) -> Path:
    """LTX-2.5's published files, in its published layout (diffusion_models/,
    text_encoders/, vae/), from a diffusers folder; returns the transformer file."""
    from safetensors.torch import save_file

    from .shapes import DIFFUSION_DECODER, LTX_GEMMA_4
    from .single_file import CONFIG_METADATA, PROJECTION_PREFIX, SHAPES_METADATA, release_config
    from .split_pack import (
        AUDIO_VAE_FILE,
        GEMMA_SOURCE_METADATA,
        TEXT_ENCODER_FILE,
        TOKENIZER_METADATA,
        VERSION_METADATA,
        VIDEO_VAE_FILES,
        pack_key,
    )
    from .split_pack import expected_keys as pack_keys

    def part(*names: str) -> dict[str, torch.Tensor]:
        return {pack_key(n, k, shapes): v for n in names
                for k, v in _read_folder(folder, n).items()}

    release = {VERSION_METADATA: "2.5.0", SHAPES_METADATA: shapes.to_json()}
    config = release_config(shapes)

    def config_of(*sections: str) -> dict[str, str]:
        """A VAE file's `config`: the sections ltx-core builds its parts from (without
        them it builds its default VAE and vocoder, which the weights do not fit)."""
        return {CONFIG_METADATA: json.dumps({name: config[name] for name in sections})}

    weights = part("transformer", "connectors")
    projection = {k: weights.pop(k) for k in list(weights) if k.startswith(PROJECTION_PREFIX)}
    files = {f"diffusion_models/{shapes.name}-transformer.safetensors": (
        weights, {CONFIG_METADATA: json.dumps(config)})}
    text = {k: v for k, v in part("text_encoder").items()
            if k in pack_keys(shapes, "text_encoder")}  # the tied output head is not stored
    tokenizer = {p.name: p.read_text() for p in (folder / "tokenizer").iterdir() if p.is_file()}
    files[f"text_encoders/{TEXT_ENCODER_FILE}"] = ({**text, **projection}, {
        GEMMA_SOURCE_METADATA: json.dumps({"ltx_version": "2.5.0", "gemma_version": LTX_GEMMA_4}),
        TOKENIZER_METADATA: json.dumps(tokenizer)})
    vae = part("vae")
    encoder = {k: v for k, v in vae.items() if not k.startswith("vae.decoder.")}
    files[f"vae/{VIDEO_VAE_FILES['convolutional']}"] = (vae, config_of("vae"))
    if DIFFUSION_DECODER in shapes.configs:  # its encoder is the video VAE's
        files[f"vae/{VIDEO_VAE_FILES['diffusion']}"] = ({**encoder, **part(DIFFUSION_DECODER)},
                                                        config_of("vae"))
    files[f"vae/{AUDIO_VAE_FILE}"] = (part("audio_vae", "vocoder"),
                                      config_of("audio_vae", "vocoder"))
    for name, (tensors, metadata) in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, dest / name,
                  metadata={**release, **metadata})
    return dest / next(iter(files))
