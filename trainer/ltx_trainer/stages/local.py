"""A local run's bookkeeping (`ltx-extend train`): its folder, derived from what it trains
(`local_run_id`), so the same command run again continues it; stages that succeeded
earlier are not run again, and one that was cut short is continued (training resumes
from its last checkpoint)."""

from __future__ import annotations

import hashlib
import json
import logging
import re

from ltx_contract.result import JobResult
from ltx_contract.spec import TrainingSpec

from .context import JobContext
from .results import INTERRUPTED, interrupted, read_result, write_result

log = logging.getLogger(__name__)


def local_run_id(spec: TrainingSpec, name: str, model: str | None, seed: int,
                 max_sequence_length: int) -> str:
    """`local/<name>/<digest>`: the same spec, model and seed give the same folder."""
    plain = re.sub(r"\.\.+", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", name))[:63].strip(".-_")
    plain = plain or "training"
    what = {"spec": json.loads(spec.to_json()), "model": model, "seed": seed,
            "maxSequenceLength": max_sequence_length}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return f"local/{plain}/{digest}"


def start_local_run(ctx: JobContext) -> None:
    """Record the run's spec (what `--resume` checks a later command against)."""
    ctx.store.put_json(f"{ctx.run}/spec.json", json.loads(ctx.spec.to_json()))


def earlier_success(ctx: JobContext, stage: str) -> JobResult | None:
    """The stage's result when an earlier attempt succeeded; else None, with the result
    marked `Interrupted` until this attempt ends."""
    earlier = read_result(ctx, stage)
    if earlier is not None and earlier.succeeded:
        log.info("the %s stage succeeded in an earlier attempt; not run again", stage)
        return earlier
    if earlier is not None and earlier.reason == INTERRUPTED:
        log.info("continuing: %s", earlier.message)
    write_result(ctx, interrupted(stage, earlier.steps_completed if earlier else 0))
    return None


def merged(results: list[JobResult]) -> list[JobResult]:
    """The stages' results, the last one carrying what every stage published (debug
    archive, LoRA, config, reel) when it succeeded."""
    final = results[-1]
    if final.succeeded:
        for earlier in results[:-1]:
            for field_name in ("artifacts", "download_urls"):
                combined = getattr(earlier, field_name).model_copy(
                    update=getattr(final, field_name).model_dump(exclude_none=True))
                setattr(final, field_name, combined)
    return results
