"""`ltx-extend sample-data`: a small sample dataset (captioned clips with audio), a
closing clip and a resource that trains on them."""

from __future__ import annotations

import argparse
from typing import Any

from ltx_contract.outcomes import ExitCode

from .options import local_path


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sample-data",
        help="write a small sample dataset (captioned clips with audio) and a spec for it",
    )
    parser.add_argument("dest", type=local_path, metavar="DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from ltx_contract.resource import API_VERSION, KIND

    from ..sample_data import write_closing_clip, write_sample_dataset

    archive = write_sample_dataset(args.dest).resolve()
    closing = write_closing_clip(args.dest).resolve()
    spec_path = args.dest / "sample-training.yaml"
    resource = {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "sample-lead-in"},
        "spec": {"trainingDataUrl": archive.as_uri(), "triggerPhrase": "LEADIN",
                 "numberOfSteps": 100, "numberOfFrames": 25, "resolution": "low",
                 "withAudio": True, "debugDataset": True,
                 "validation": [{"prompt": "LEADIN a square glides in",
                                 "videoUrl": closing.as_uri()}],
                 "validationNumberOfFrames": 25, "validationResolution": "low"},
    }
    spec_path.write_text(yaml.safe_dump(resource, sort_keys=False), encoding="utf-8")
    print(f"wrote {archive}\nwrote {closing}\nwrote {spec_path}")
    return ExitCode.SUCCESS
