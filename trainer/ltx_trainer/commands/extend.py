"""`ltx-extend extend`: generate the lead-in to a closing clip with a trained LoRA."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ltx_contract.outcomes import ExitCode

from .options import local_path, model_part_options, setup_logging


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "extend",
        help="extend a closing clip backward in time with a trained LoRA",
        description="Generate the lead-in to CLIP: its last conditioning frames are kept and "
        "the frames before them are generated. Writes an H.264 (+AAC) file.",
    )
    parser.add_argument("--model", type=local_path,
                        help="diffusers model folder, LTX-2.3's single-file checkpoint "
                        "(.safetensors, with --text-encoder) or LTX-2.5's transformer file "
                        "(default: the tiny model)")
    parser.add_argument("--text-encoder", type=local_path, metavar="DIR|FILE",
                        help="LTX-2.3: the Gemma-3 folder of the single file; LTX-2.5: the "
                        "text encoder file (default: its published name beside --model)")
    model_part_options(parser, local_path)
    parser.add_argument("--lora", type=local_path, help="the trained LoRA (.safetensors)")
    parser.add_argument("--clip", type=local_path, required=True, help="the closing clip")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt")
    parser.add_argument("--output", type=local_path, required=True)
    parser.add_argument("--frames", type=int, default=89, help="output frames (8k+1)")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--resolution", default="high")
    parser.add_argument("--aspect", default="1:1")
    parser.add_argument("--audio", action="store_true", help="extend the audio too")
    parser.add_argument("--conditioning-frames", type=int,
                        help="suffix frames kept (default: the LoRA's)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stg-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decoded-ending", action="store_true",
                        help="end with the model's decode of the closing clip instead of the "
                        "clip's own frames and audio")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ltx_contract.outcomes import Outcome
    from ltx_contract.rules import snap_frames
    from ltx_contract.spec import DEFAULT_NEGATIVE_PROMPT, FRAME_SIZES

    from ..model.loader import default_device
    from ..model.source import resolve_model
    from ..preview.extend import ExtendRequest, extend_clip

    setup_logging()
    if (args.resolution, args.aspect) not in FRAME_SIZES:
        print("--resolution must be low, medium or high and --aspect 16:9, 1:1 or 9:16",
              file=sys.stderr)
        return ExitCode.INVALID_INPUT
    request = ExtendRequest(
        model=args.model, text_encoder=args.text_encoder, video_vae=args.video_vae,
        audio_vae=args.audio_vae, lora=args.lora, clip=args.clip,
        prompt=args.prompt, output=args.output, frames=snap_frames(args.frames), fps=args.fps,
        resolution=args.resolution, aspect=args.aspect, audio=args.audio,
        conditioning_frames=args.conditioning_frames,
        negative_prompt=args.negative_prompt or DEFAULT_NEGATIVE_PROMPT, steps=args.steps,
        stg_scale=args.stg_scale, seed=args.seed, decoded_ending=args.decoded_ending)
    try:
        path = extend_clip(request, default_device(), resolve_model)
    except (Outcome, ValueError, FileNotFoundError) as exc:
        print(f"extend failed: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    print(f"wrote {path}")
    return ExitCode.SUCCESS
