"""`ltx-extend`: the user's command line, assembled from the subcommands of `commands/`.

Subcommands import what they need when they run, so `ltx-extend validate` and
`ltx-extend crd` start without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .commands import crd, extend, job, plan, prepare, sample_data, tiny_model, train, validate
from .model.source import MODEL_CACHE_ENV

#: the subcommands, in the order `ltx-extend --help` lists them
COMMANDS = (validate, crd, prepare, sample_data, tiny_model, plan, extend, train, job)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltx-extend",
        description="Train LTX-2.3 and LTX-2.5 LoRAs that extend video backward in time.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _confinement(args: argparse.Namespace) -> Path | None:
    """The work folder `job` and `train` write under (None for other commands); sets
    the defaults of --work and --model-cache that depend on it."""
    import os

    if args.command not in ("job", "train"):
        return None
    if args.work is None:
        from .local_run import default_work

        args.work = default_work(args.output)
    args.work = args.work.absolute()
    if args.model_cache is None:
        args.model_cache = Path(os.environ.get(MODEL_CACHE_ENV) or args.work / "model-cache")
    args.model_cache = args.model_cache.absolute()
    return args.work


#: loggers whose import-time warnings say nothing about a run: torchao's prebuilt kernels
#: for other Pythons and GPUs (the low-memory mode uses none of them), diffusers' note
#: that follows from them, and torch's deprecation notes on torchao's enums
QUIET_LOGGERS = ("torchao", "diffusers.quantizers.torchao.torchao_quantizer",
                 "torch.utils._pytree")


def main(argv: list[str] | None = None) -> int:
    import logging

    from .workspace import confined_to

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    work = _confinement(args)
    if work is None:
        return int(args.func(args))
    with confined_to(work):  # before torch, transformers & co. are imported
        return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
