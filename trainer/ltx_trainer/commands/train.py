"""`ltx-extend train`: a whole training on this machine (prepare, train, previews and
publish in one process; `local_run.py` runs it)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ltx_contract.outcomes import ExitCode

from ..spec_file import read_spec_or_report
from .options import (
    local_path,
    model_part_options,
    setup_logging,
    train_settings,
    training_options,
)


def _processes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--processes must be a whole number of 1 or more, "
                                         f"not {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train locally: prepare, train, previews and publish in one process",
        description="Run a whole training on this machine. With no --model and no spec.model "
        "the tiny random model is used (written on first use); with no --output, "
        "./ltx-extend-output. Running the same command again continues an interrupted run "
        "from its last checkpoint; a finished run is not trained again.",
    )
    parser.add_argument("spec", type=local_path, metavar="SPEC")
    parser.add_argument("--output", metavar="DIR|URL",
                        help="a folder (plain path or file://) or an s3:// URL")
    parser.add_argument("--work", type=local_path,
                        help="work folder: caches, checkpoints, temporary files "
                        "(default OUTPUT/.work)")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue this run folder (local/NAME/ID, as printed) instead of "
                        "the one the spec gives")
    parser.add_argument("--progress-port", type=int, help="serve /progress and /metrics")
    parser.add_argument("--processes", type=_processes, default=1, metavar="N",
                        help="train with N data-parallel ranks on this machine, through "
                        "torch's elastic launcher (gloo on CPU, NCCL on GPUs; the global "
                        "batch is N)")
    training_options(parser)
    model_part_options(parser, str)
    parser.set_defaults(func=run)


def _with_checkpoint(args: argparse.Namespace, spec: Any) -> Any:
    """The spec with `--model FILE --text-encoder DIR` as its `model` (a local run takes a
    single-file checkpoint through the spec; a local or file:// one is used in place and
    checked here first, before any work); `args.model` is then cleared. Folders are left
    to the run."""
    from ltx_contract.outcomes import InvalidInput
    from ltx_contract.spec import ModelSource

    from ..model.choice import ModelChoice
    from ..model.source import STORE_SCHEMES, is_checkpoint
    from ..model.split_pack import is_split_transformer

    parts = {"text_encoder": args.text_encoder, "video_vae": getattr(args, "video_vae", None),
             "audio_vae": getattr(args, "audio_vae", None)}
    if args.model and any(parts.values()) and not is_checkpoint(args.model):
        raise InvalidInput(f"{args.model} is a model folder, which has its own text encoder "
                           "and VAEs: --text-encoder, --video-vae and --audio-vae go with a "
                           "checkpoint only")
    if spec is None or not args.model or not is_checkpoint(args.model):
        return spec

    def as_url(text: str) -> str:
        return text if text.startswith(STORE_SCHEMES) else local_path(text).absolute().as_uri()

    checkpoint = as_url(args.model)
    local = checkpoint.startswith("file://")
    split = local and local_path(args.model).is_file() and is_split_transformer(
        local_path(args.model))
    if not args.text_encoder and local and not split:
        raise InvalidInput(f"{args.model} holds no text encoder: give its Gemma-3 folder "
                           "with --text-encoder DIR")
    urls = {k: as_url(v) for k, v in parts.items() if v}
    if local and all(u.startswith("file://") for u in urls.values()):
        # all local: checked here, before any work (a URL is checked by the run, first)
        ModelChoice(checkpoint, **urls).resolve(args.model_cache)
    args.model = args.text_encoder = None
    return spec.model_copy(update={"model": ModelSource(url=checkpoint, **urls)})


def run(args: argparse.Namespace) -> int:
    from ltx_contract.outcomes import Outcome

    from ..local_run import train_locally

    setup_logging()
    spec = read_spec_or_report(args.spec)
    if (args.text_encoder or args.video_vae or args.audio_vae) and not args.model:
        print("--text-encoder, --video-vae and --audio-vae go with --model FILE (a checkpoint)",
              file=sys.stderr)
        return ExitCode.INVALID_INPUT
    try:
        spec = _with_checkpoint(args, spec)
        settings = train_settings(args)
    except Outcome as exc:
        print(f"--model {args.model}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except argparse.ArgumentTypeError as exc:
        print(exc, file=sys.stderr)
        return ExitCode.USAGE
    return train_locally(args, spec, settings)
