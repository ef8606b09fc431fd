"""`ltx-extend job`: one stage (prepare or train), as the operator's Jobs run it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ltx_contract.outcomes import ExitCode

from .options import local_path, setup_logging, train_settings, training_options


def _run_argument(text: str) -> str:
    from ..store import check_run

    try:
        return check_run(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "job",
        help="run one stage as the operator's Jobs do (prepare or train)",
        description="Run one stage with the spec as JSON. Exit codes: 0 success, 1 internal "
        "error, 2 usage, 3 invalid input, 4 download failure. The result goes to the store "
        "and the termination log. Every file it writes is under --work or --model-cache. "
        "With torchrun's PET_NPROC_PER_NODE × PET_NNODES above 1, `job train` starts the "
        "ranks through torch's elastic launcher.",
    )
    parser.add_argument("stage", choices=["prepare", "train"])
    parser.add_argument("--spec-json", help="the spec as JSON, or @FILE (env LTX_EXTEND_SPEC)")
    parser.add_argument("--store", help="artifact store: a folder, file:// or s3:// URL (env "
                        "LTX_EXTEND_STORE)")
    parser.add_argument("--run", type=_run_argument,
                        help="<namespace>/<name>/<uid> (env LTX_EXTEND_RUN)")
    parser.add_argument("--work", type=local_path, default=Path("/tmp/ltx-extend"))
    parser.add_argument("--termination-log", type=local_path,
                        help="default /dev/termination-log when writable")
    parser.add_argument("--progress-port", type=int, default=8080)
    parser.add_argument("--allow-file-urls", action="store_true")
    training_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One stage, as the operator's Jobs run it."""
    import os

    from ltx_contract.result import JobResult
    from ltx_contract.spec import SpecError

    from ..dataset import FetchPolicy
    from ..progress import ProgressServer, ProgressState
    from ..spec_file import read_spec, spec_from_text
    from ..stages.context import JobContext
    from ..stages.dispatch import run_stage
    from ..stages.results import write_result
    from ..store import check_run, open_store
    from ..training.launch import Ranks
    from ..workspace import make_folders

    setup_logging()
    try:  # a malformed run is refused before anything is read or written
        run = check_run(args.run or os.environ.get("LTX_EXTEND_RUN", ""))
        location = args.store or os.environ.get("LTX_EXTEND_STORE", "")
        store = open_store(location)
        ranks = Ranks.from_env()  # torchrun's PET_* settings: more than one rank launches
    except ValueError as exc:
        print(f"ltx-extend job: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    termination = args.termination_log
    if termination is None:
        default = Path(os.environ.get("LTX_EXTEND_TERMINATION_LOG", "/dev/termination-log"))
        termination = default if default.parent.is_dir() and os.access(default.parent,
                                                                        os.W_OK) else None
    settings = train_settings(args)
    make_folders()
    raw = args.spec_json or os.environ.get("LTX_EXTEND_SPEC", "")
    state = ProgressState()
    try:
        spec = read_spec(local_path(raw[1:])) if raw.startswith("@") else spec_from_text(raw)
    except (SpecError, argparse.ArgumentTypeError) as exc:
        message = "; ".join(exc.problems) if isinstance(exc, SpecError) else str(exc)
        result = JobResult(stage=args.stage, outcome="Failed", reason="InvalidSpec",
                           message=message, exit_code=int(ExitCode.INVALID_INPUT))
        write_result(JobContext(spec=None, store=store, run=run, work_dir=args.work,
                                termination_log=termination), result)
        print(message, file=sys.stderr)
        return result.exit_code
    ctx = JobContext(
        spec=spec, store=store, run=run, work_dir=args.work, model=args.model,
        text_encoder=args.text_encoder, model_cache=args.model_cache,
        fetch=FetchPolicy(allow_file_urls=args.allow_file_urls,
                          allow_private_networks=args.allow_private_networks),
        termination_log=termination, progress=state, train_settings=settings,
        ranks=ranks if args.stage == "train" else None, progress_port=args.progress_port,
        store_location=location)
    if ctx.in_ranks:  # the main rank serves /progress
        result = run_stage(args.stage, ctx)
    else:
        with ProgressServer(state, args.progress_port):
            result = run_stage(args.stage, ctx)
    print(result.termination_message())
    return result.exit_code
