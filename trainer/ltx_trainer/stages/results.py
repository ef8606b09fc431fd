"""What every stage leaves behind, however it ends: a JSON manifest in the artifact store
(`<run>/result-<stage>.json`) and the pod's termination message (at most 4 KiB). The
process exit code tells the outcome class (see `outcomes.ExitCode`). A local stage's
result says `Interrupted` from before it starts until it ends, so an attempt that is
killed leaves exactly that behind.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

from ltx_contract.outcomes import ExitCode, Outcome
from ltx_contract.result import JobResult

from .context import JobContext

log = logging.getLogger(__name__)

INTERRUPTED = "Interrupted"
DISK_FULL_MARGIN = 2**20  # bytes: less room than this after a failure means a full disk


def failed(stage: str, exc: Outcome) -> JobResult:
    return JobResult(stage=stage, outcome="Failed", reason=exc.reason, message=exc.message,
                     exit_code=int(exc.exit_code))


def disk_full(exc: BaseException | None, work: Path) -> bool:
    """ENOSPC anywhere in the exception's chain, or a failure with the work folder's disk
    full (torch.save reports a full disk as `basic_ios::clear: iostream error`)."""
    try:
        if shutil.disk_usage(work).free < DISK_FULL_MARGIN:
            return True
    except OSError:
        pass
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def read_result(ctx: JobContext, stage: str) -> JobResult | None:
    """The result an earlier attempt left in the store, if any."""
    stored = ctx.store.get_json(f"{ctx.run}/result-{stage}.json")
    return JobResult.model_validate(stored) if isinstance(stored, dict) else None


def interrupted(stage: str, step: int = 0) -> JobResult:
    """What a local stage's result says while it runs, and after a crash."""
    where = f" after step {step}" if step else ""
    resume = f"resume from step {step}" if step else "continue"
    return JobResult(
        stage=stage, outcome="Failed", reason=INTERRUPTED, steps_completed=step,
        message=f"the {stage} stage stopped{where} before it finished (the process was "
        f"killed or crashed); run the same command again to {resume}",
        exit_code=int(ExitCode.INTERNAL_ERROR))


def write_result(ctx: JobContext, result: JobResult) -> None:
    if not ctx.main_node:  # another node's pod: its own termination message only
        _write_termination(ctx, result.termination_message() if not result.succeeded else
                           json.dumps({"stage": result.stage, "worker": True,
                                       "node": ctx.ranks.node_rank}))
        return
    key = f"{ctx.run}/result-{result.stage}.json"
    try:
        # the one link the termination message carries: to this copy, which has the rest
        result.result_url = ctx.store.download_url(key)
        ctx.store.put_json(key, result.to_dict())
    except Exception as exc:  # the termination message below still carries the result
        result.result_url = None
        log.error("could not write the result manifest: %s", exc)
    _write_termination(ctx, result.termination_message())


def _write_termination(ctx: JobContext, message: str) -> None:
    if ctx.termination_log is not None:
        try:
            ctx.termination_log.write_text(message)
        except OSError as exc:
            log.error("could not write %s: %s", ctx.termination_log, exc)


def publish(ctx: JobContext, result: JobResult, name: str, local: Path, filename: str) -> None:
    """Upload one output; `name` is its field in `Artifacts` (e.g. lora_file)."""
    key = f"{ctx.run}/outputs/{filename}"
    setattr(result.artifacts, name, ctx.store.put_file(local, key))
    setattr(result.download_urls, name, ctx.store.download_url(key))
