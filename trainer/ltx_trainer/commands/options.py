"""The argument types, option groups and settings several subcommands share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..model.source import MODEL_CACHE_ENV


def local_path(text: str) -> Path:
    """A command-line path: plain (relative or absolute) or a file:// URL."""
    if text.startswith("file:"):
        from ..store import file_url_path

        try:
            return file_url_path(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a local path or file:// URL")
    return Path(text)


def setup_logging() -> None:
    """Timed INFO lines, for the commands that run a stage or a model."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")


def model_part_options(p: argparse.ArgumentParser, path: Any) -> None:
    """--video-vae and --audio-vae: LTX-2.5's pack parts, where not beside --model."""
    for flag, what in (("--video-vae", "video VAE file (ltx-2.5-video-vae[-conv]-bf16."
                        "safetensors)"), ("--audio-vae", "audio VAE file "
                                          "(ltx-2.5-audio-vae-bf16.safetensors)")):
        p.add_argument(flag, type=path, metavar="FILE|URL" if path is str else "FILE",
                       help=f"LTX-2.5: the {what}; default: its published name beside "
                       "--model")


def training_options(p: argparse.ArgumentParser) -> None:
    """The model and training settings `train` and `job` share."""
    p.add_argument("--model", help="diffusers model folder, LTX-2.3's single-file "
                   "checkpoint (.safetensors, with --text-encoder) or LTX-2.5's transformer "
                   "file, or the s3:// / file:// store URL of any (downloaded into the model "
                   "cache; a file:// checkpoint is used in place); default: the spec's model")
    p.add_argument("--text-encoder", metavar="DIR|FILE|URL",
                   help="LTX-2.3: the Gemma-3 folder (config, weights, tokenizer) of the "
                   "single file; LTX-2.5: the text encoder file (default: beside --model); "
                   "default: the spec's model.textEncoder")
    p.add_argument("--low-memory", action="store_true", default=None,
                   help="int8 weight-only frozen base weights and an 8-bit optimizer, "
                   "for GPUs of 48 GB (docs/real-model.md)")
    p.add_argument("--model-cache", type=local_path, metavar="DIR",
                   help="where a model given by URL is downloaded, once (env "
                   f"{MODEL_CACHE_ENV}; default WORK/model-cache)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--preview-every", type=int, help="steps between previews (0: end)")
    p.add_argument("--validation-every", type=int,
                   help="steps between validation losses (0, the default: at each "
                   "checkpoint; always at the last step)")
    p.add_argument("--preview-steps", type=int, help="denoising steps of a preview")
    p.add_argument("--max-sequence-length", type=int, help="text tokens (default 1024)")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpointed-blocks", type=int, metavar="N",
                   help="checkpoint the first N transformer blocks (default: the fewest "
                   "whose planned peak fits the GPU's memory; none on a CPU)")
    p.add_argument("--attention-backend",
                   choices=("auto", "default", "cudnn", "flash", "efficient", "math"),
                   help="SDPA kernels (default auto: cuDNN, then flash, then "
                   "memory-efficient on a GPU)")
    p.add_argument("--compile-backend", metavar="BACKEND",
                   help="torch.compile the repeated transformer blocks with this backend, "
                   "e.g. inductor (default: not compiled)")
    p.add_argument("--allow-private-networks", action="store_true",
                   help="allow http(s) URLs on loopback or private addresses")
    p.add_argument("--accumulate", type=int, metavar="K",
                   help="samples each rank trains per step, their gradients averaged "
                   "(the global batch is ranks × K; default 1)")
    p.add_argument("--shard-base", action="store_true", default=None,
                   help="shard the frozen base over the node's GPUs with FSDP2 (env "
                   "LTX_EXTEND_SHARD_BASE=1)")
    p.add_argument("--collective-timeout", type=float, metavar="SECONDS",
                   help="how long a rank waits for its peers before the step fails "
                   "(default 600)")


def train_settings(args: argparse.Namespace) -> Any:
    """The trainer's settings from `training_options`' flags."""
    import os

    from ..training.settings import TrainSettings

    platform = {"shard_base": True} if os.environ.get("LTX_EXTEND_SHARD_BASE") == "1" else {}
    return TrainSettings.from_options(vars(args), **platform)  # the operator's setting
