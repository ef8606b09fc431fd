"""`ltx-extend prepare`: the prepare stage on this machine (fetch, check and fit the
dataset)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ltx_contract.outcomes import ExitCode

from ..spec_file import read_spec_or_report
from .options import local_path, setup_logging


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="run the prepare stage locally: fetch, check and fit the dataset",
        description="Fetch the training data and validation clips of SPEC, check them and "
        "fit them into WORK/dataset with a manifest. file:// URLs are allowed.",
    )
    parser.add_argument("spec", type=local_path, metavar="SPEC")
    parser.add_argument("--work", type=local_path, required=True, help="work directory")
    parser.add_argument("--allow-private-networks", action="store_true",
                        help="allow http(s) URLs on loopback or private addresses")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ltx_contract.manifest import Manifest
    from ltx_contract.outcomes import Outcome

    from ..dataset import FetchPolicy, PrepareSettings, prepare_dataset

    setup_logging()
    spec = read_spec_or_report(args.spec)
    if spec is None:
        return ExitCode.INVALID_INPUT
    policy = FetchPolicy(allow_file_urls=True,
                         allow_private_networks=args.allow_private_networks)
    try:
        prepare_dataset(spec, args.work, PrepareSettings(fetch=policy))
    except Outcome as exc:
        print(f"prepare failed ({exc.reason}): {exc.message}", file=sys.stderr)
        return exc.exit_code
    dataset = args.work / "dataset"
    manifest = Manifest.read(dataset)
    print(f"prepared {len(manifest.samples)} sample(s) of {manifest.frames} frames at "
          f"{manifest.frame_rate} fps, {manifest.width}×{manifest.height}"
          f"{', with audio' if manifest.with_audio else ''}; "
          f"{len(manifest.validation)} validation clip(s)")
    for warning in manifest.warnings:
        print(f"  warning: {warning}")
    print(f"dataset: {dataset}\nmanifest: {dataset / 'manifest.json'}")
    if spec.debug_dataset:
        print(f"debug archive: {args.work / 'debug_dataset.zip'}")
    return ExitCode.SUCCESS
