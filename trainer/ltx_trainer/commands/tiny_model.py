"""`ltx-extend tiny-model`: a random-weight model of the LTX-2 classes, tiny (tests and
quick starts) or at a release's real shapes (`model/writer.py`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ltx_contract.outcomes import ExitCode

from ..model.shapes import SHAPES
from ..model.writer import LAYOUTS, write_real_shape_model
from .options import local_path


def add_parser(subparsers: Any) -> None:
    """`ltx-extend tiny-model DIR [--version 2.0|2.3|2.5] [--shapes ltx-2.5 [--layout …]]`."""
    parser = subparsers.add_parser(
        "tiny-model",
        help="write a random model of the LTX-2 classes: tiny, or at the real shapes",
        description="Write a random-weight model. Without --shapes: tiny widths (tests and "
        "quick starts). With --shapes ltx-2.3 or ltx-2.5: the real widths, heads and channels "
        "with one block / layer per stack, in the diffusers folder layout or the release's "
        "official layout (LTX-2.3: a single .safetensors checkpoint plus a Gemma-3 folder; "
        "LTX-2.5: one file per component, --layout split).")
    parser.add_argument("dest", type=local_path, metavar="DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", choices=("2.0", "2.3", "2.5"), default="2.0",
                        help="without --shapes: the tiny model's LTX-2 version (default 2.0)")
    parser.add_argument("--shapes", choices=sorted(SHAPES), help="release whose shapes to use")
    parser.add_argument("--layout", choices=LAYOUTS, default="diffusers",
                        help="with --shapes: the layout (default diffusers; single-file for "
                        "LTX-2.0/2.3, split for LTX-2.5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.shapes is None:
        if args.layout != "diffusers":
            print("--layout needs --shapes: the tiny model is written in the diffusers layout",
                  file=sys.stderr)
            return ExitCode.INVALID_INPUT
        from ..model.tiny import write_tiny_model

        path = write_tiny_model(args.dest, seed=args.seed, version=args.version)
        print(f"wrote a tiny random LTX-{args.version} model to {path}")
        return ExitCode.SUCCESS
    try:
        path = write_real_shape_model(args.dest, args.shapes, args.layout, seed=args.seed)
    except ValueError as exc:  # a layout the release is not published in
        print(exc, file=sys.stderr)
        return ExitCode.INVALID_INPUT
    print(f"wrote a random {args.shapes} model at its real shapes (one block per stack), "
          f"{args.layout} layout: {path}")
    return ExitCode.SUCCESS
