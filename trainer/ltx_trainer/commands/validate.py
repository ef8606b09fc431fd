"""`ltx-extend validate`: check resources or request bodies against every rule, without
a cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ltx_contract.outcomes import ExitCode

from .options import local_path


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check LtxExtendTraining resources or extend-suffix request JSON",
        description="Check resources (YAML, several documents allowed) or request bodies "
        "(JSON, camelCase or snake_case) against every rule, without a cluster.",
    )
    parser.add_argument("files", nargs="+", type=local_path, metavar="FILE")
    parser.set_defaults(func=run)


def _describe_valid(label: str, spec: Any) -> list[str]:
    from ltx_contract.billing import billable_units, cost

    units = billable_units(spec.number_of_steps, succeeded=True)
    width, height = spec.frame_size
    lines = [
        f"{label}: valid",
        f"  {spec.number_of_steps} steps at rank {spec.rank}, "
        f"{spec.number_of_frames} frames at {spec.frame_rate} fps, {width}×{height}, "
        f"suffix {spec.conditioning_frames} frames ({spec.suffix_latent_frames} latent), "
        f"audio {'on' if spec.with_audio else 'off'}, "
        f"{len(spec.validation)} validation sample(s)",
    ]
    for field, (requested, used) in spec.snapped().items():
        lines.append(f"  {field} {requested} is snapped down to {used} (8k+1 frames)")
    lines.append(f"  bills {units} units (${cost(units)}) if it succeeds, 0 if it fails")
    return lines


def run(args: argparse.Namespace) -> int:
    from ltx_contract.resource import KIND
    from ltx_contract.spec import SpecError

    from ..spec_file import DocumentError, is_resource, read_documents, spec_of

    worst = ExitCode.SUCCESS
    for path in args.files:
        try:
            documents = read_documents(path)
        except DocumentError as exc:
            print(exc, file=sys.stderr)
            worst = ExitCode.INVALID_INPUT
            continue
        if not documents:
            print(f"{path}: holds no document", file=sys.stderr)
            worst = ExitCode.INVALID_INPUT
        for doc in documents:
            resource = is_resource(doc)
            where = f"{KIND}/{(doc.get('metadata') or {}).get('name')}" if resource else (
                "request")
            try:
                spec = spec_of(doc)
            except SpecError as exc:
                print(f"{path}: {where} is invalid:", file=sys.stderr)
                for problem in exc.problems:
                    print(f"  - {problem}", file=sys.stderr)
                worst = ExitCode.INVALID_INPUT
                continue
            print("\n".join(_describe_valid(f"{path}: {where}", spec)))
    return worst
