"""Random-weight models at LTX-2's real shapes (`shapes.py`) written to disk: the
diffusers folder layout, or the official single-file layout (`single_file.py`) with its
Gemma-3 folder; and `ltx-extend tiny-model`, which writes these or the tiny model.

Kept apart from `shapes.py` so that the single-file reader can use the shapes without
the writer's import of its key mapping closing a circle."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .shapes import COMPONENTS, SCHEDULER, SHAPES, ModelShapes, build_component, real_shapes

if TYPE_CHECKING:
    import torch

MARKER = "ltx-extend-real-shapes.json"
LAYOUTS = ("diffusers", "single-file")


def write_real_shape_model(dest: Path, shapes: ModelShapes | str = "ltx-2.3",
                           layout: str = "diffusers", seed: int = 0) -> Path:
    """Write a random-weight model of `shapes` (a release name is cut to one block) and
    return its path: the folder for the diffusers layout, the checkpoint file for the
    single-file layout (its Gemma-3 folder beside it, `single_file.GEMMA_DIR`)."""
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
    folder, single = dests.get("diffusers"), dests.get("single-file")
    for dest in dests.values():
        dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    with contextlib.ExitStack() as stack:
        staging = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".components-", dir=single)))
        _write_diffusers(staging, shapes, seed)
        if folder is not None:
            paths["diffusers"] = folder
        if single is not None:
            paths["single-file"] = _write_single_file(staging, single, shapes)
    for layout, dest in dests.items():
        (dest / MARKER).write_text(json.dumps({"shapes": shapes.name, "layout": layout,
                                               "seed": seed, "kind": "real-shapes-random"}))
    return paths


def _write_diffusers(folder: Path, shapes: ModelShapes, seed: int) -> None:
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer

    from .tiny import _tokenizer

    index: dict[str, Any] = {"_class_name": "LTX2Pipeline",
                             "_diffusers_version": diffusers.__version__}
    for name in COMPONENTS:
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

    from .single_file import GEMMA_DIR, SHAPES_METADATA, to_original

    original: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as files:
        for name in COMPONENTS[:-1]:
            for part in sorted((folder / name).glob("*.safetensors")):
                file = files.enter_context(safe_open(part, framework="pt"))
                original.update(to_original(name, {k: file.get_tensor(k) for k in file.keys()},
                                            shapes))
        path = dest / f"{shapes.name}.safetensors"
        save_file(original, path, metadata={SHAPES_METADATA: shapes.to_json()})
    gemma = dest / GEMMA_DIR
    shutil.copytree(folder / "text_encoder", gemma, dirs_exist_ok=True)
    shutil.copytree(folder / "tokenizer", gemma, dirs_exist_ok=True)
    return path


# -- command line (`ltx-extend tiny-model`) ---------------------------------------------

def add_parser(subparsers: Any, path: Any = Path) -> None:
    """`ltx-extend tiny-model DIR [--version 2.0|2.3] [--shapes ltx-2.3 [--layout …]]`;
    `path` parses the folder argument (the CLI's plain-path-or-file:// type)."""
    parser = subparsers.add_parser(
        "tiny-model",
        help="write a random model of the LTX-2 classes: tiny, or at the real shapes",
        description="Write a random-weight model. Without --shapes: tiny widths (tests and "
        "quick starts). With --shapes ltx-2.3: the real widths, heads and channels with one "
        "block / layer per stack, in the diffusers folder layout or the official single-file "
        "layout (a .safetensors checkpoint plus a Gemma-3 folder).")
    parser.add_argument("dest", type=path, metavar="DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", choices=("2.0", "2.3"), default="2.0",
                        help="without --shapes: the tiny model's LTX-2 version (default 2.0)")
    parser.add_argument("--shapes", choices=sorted(SHAPES), help="release whose shapes to use")
    parser.add_argument("--layout", choices=LAYOUTS, default="diffusers",
                        help="with --shapes: the folder layout (default diffusers)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ltx_contract.outcomes import ExitCode

    if args.shapes is None:
        if args.layout != "diffusers":
            print("--layout needs --shapes: the tiny model is written in the diffusers layout",
                  file=__import__("sys").stderr)
            return ExitCode.INVALID_INPUT
        from .tiny import write_tiny_model

        path = write_tiny_model(args.dest, seed=args.seed, version=args.version)
        print(f"wrote a tiny random LTX-{args.version} model to {path}")
        return ExitCode.SUCCESS
    path = write_real_shape_model(args.dest, args.shapes, args.layout, seed=args.seed)
    print(f"wrote a random {args.shapes} model at its real shapes (one block per stack), "
          f"{args.layout} layout: {path}")
    return ExitCode.SUCCESS
