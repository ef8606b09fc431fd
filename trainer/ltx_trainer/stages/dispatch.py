"""The stages as the operator's Jobs run them (`run_stage`), and both in one process for
a local run (`run_local`). A stage never raises: every outcome, an internal error or a
full disk included, becomes its result, written out (`results.py`)."""

from __future__ import annotations

import logging
import traceback

from ltx_contract.outcomes import DiskFull, ExitCode, Outcome
from ltx_contract.result import JobResult

from .context import JobContext
from .local import earlier_success, merged, start_local_run
from .prepare import prepare
from .results import disk_full, failed, write_result
from .train import fetch_train_inputs, train_here

log = logging.getLogger(__name__)

STAGES = ("prepare", "train")


def run_stage(stage: str, ctx: JobContext) -> JobResult:
    """Run one stage; never raises: every outcome becomes a Result, written out."""
    try:
        result = {"prepare": prepare, "train": train}[stage](ctx)
    except Outcome as exc:
        result = failed(stage, exc)
    except Exception as exc:  # an internal error: reported, logged in full, bills 0
        if disk_full(exc, ctx.work_dir):
            log.error("the %s stage ran out of disk:\n%s", stage, traceback.format_exc())
            result = failed(stage, DiskFull(stage))
        else:
            log.error("internal error in the %s stage:\n%s", stage, traceback.format_exc())
            result = JobResult(
                stage=stage, outcome="Failed", reason="InternalError",
                message=f"internal error in the {stage} stage: {type(exc).__name__}: {exc}",
                exit_code=int(ExitCode.INTERNAL_ERROR))
    ctx.progress.stage("succeeded" if result.succeeded else "failed")
    write_result(ctx, result)
    return result


def train(ctx: JobContext) -> JobResult:
    """The train stage: its inputs fetched once for the node, then trained here or in the
    node's ranks."""
    from ..model.loader import default_device
    from ..training.distributed import SINGLE
    from .ranks import launch_ranks

    model = fetch_train_inputs(ctx)
    if ctx.in_ranks:
        return launch_ranks(ctx, model)
    return train_here(ctx, model, SINGLE, ctx.device or default_device())


def run_local(ctx: JobContext) -> list[JobResult]:
    """Prepare then train in one process (the quick start), continuing the run folder
    where an earlier attempt stopped. Stops at the first failure."""
    start_local_run(ctx)
    results: list[JobResult] = []
    for stage in STAGES:
        results.append(earlier_success(ctx, stage) or run_stage(stage, ctx))
        if not results[-1].succeeded:
            break
    return merged(results)
