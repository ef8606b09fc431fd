"""`ltx-extend crd`: print, write or check the CustomResourceDefinition generated from the
spec model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ltx_contract.outcomes import ExitCode

from .options import local_path


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "crd",
        help="print the CustomResourceDefinition generated from the spec model",
    )
    dest = parser.add_mutually_exclusive_group()
    dest.add_argument("-o", "--output", type=local_path, help="write it to this file")
    dest.add_argument(
        "--check", type=local_path, metavar="FILE",
        help="fail if FILE differs from the generated CRD"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ltx_contract.crd import render_crd

    text = render_crd()
    if args.check:
        try:
            current = args.check.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"{args.check}: cannot be read: {exc.strerror}", file=sys.stderr)
            return ExitCode.INTERNAL_ERROR
        if current != text:
            print(f"{args.check} is stale: run `make crd` to regenerate it", file=sys.stderr)
            return ExitCode.INTERNAL_ERROR
        print(f"{args.check} is up to date")
    elif args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return ExitCode.SUCCESS
