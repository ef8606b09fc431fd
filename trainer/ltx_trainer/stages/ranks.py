"""The train stage in several ranks (`JobContext.ranks`): the launcher process of each
node, once the stage's inputs are downloaded, starts the ranks (`training/launch.py`);
each runs `train_rank`.

The main rank (local rank 0 of node 0) alone writes the result and serves `/progress`;
the launcher of node 0 writes the termination message with the result, the others a
short one. An outcome a rank meets (invalid input, a download failure) is recorded in
the node's work folder and ends every rank: ranks started again after it see it and stop
at once, so the run fails with that rank's code and message without spending the
restarts.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx_contract.outcomes import Outcome
from ltx_contract.result import JobResult

from ..progress import ProgressServer, ProgressState
from .context import JobContext
from .results import failed, write_result
from .train import train_here

if TYPE_CHECKING:
    from ..model.loader import Model


@dataclass
class RankJob:
    """What a rank needs to run the train stage (picklable: it crosses `spawn`)."""

    ctx: JobContext  # with no termination log: the launcher writes it
    model: Model

    @property
    def outcome_file(self) -> Path:
        return self.ctx.work_dir / "train" / "ranks" / "outcome.json"


def launch_ranks(ctx: JobContext, model: Model) -> JobResult:
    """Start the node's ranks and wait for them; the first failed rank's result, else the
    first rank's."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from ..training.launch import launch

    # a store given by its location is opened again in each rank (an S3 client does not
    # pickle); a store object alone (a folder) travels as it is
    store = None if ctx.store_location else ctx.store
    job = RankJob(replace(ctx, termination_log=None, progress=None, store=store), model)
    job.outcome_file.unlink(missing_ok=True)  # a new attempt of the stage
    try:
        returned = launch(ctx.ranks, job.outcome_file.parent / "logs", train_rank, job)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        again = (f"the ranks were started again {ctx.ranks.max_restarts} times"
                 if ctx.ranks.max_restarts else "its pod fails (a gang restarts as a whole)")
        raise RuntimeError(f"rank {rank} failed and {again}: {failure.message}") from None
    results = [JobResult.model_validate(returned[r]) for r in sorted(returned)]
    return next((r for r in results if not r.succeeded), results[0])


def train_rank(job: RankJob) -> dict[str, Any]:
    """One rank of the train stage (the launcher's entry point); its result as a dict."""
    from ..store import open_store
    from ..training import distributed

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if job.outcome_file.is_file():  # met by a rank of an earlier attempt: the run's end
        return json.loads(job.outcome_file.read_text())
    ctx = replace(job.ctx, progress=ProgressState(),
                  store=job.ctx.store or open_store(job.ctx.store_location))
    world, device = distributed.init(distributed.World.from_env(),
                                     ctx.train_settings.collective_timeout)
    serve = world.is_main and ctx.progress_port is not None
    try:
        with ProgressServer(ctx.progress, ctx.progress_port, ctx.progress_host) if serve \
                else nullcontext():
            result = train_here(ctx, job.model, world, device)
    except Outcome as exc:
        result = failed("train", exc)
        partial = job.outcome_file.with_name(f".outcome-{world.rank}")
        partial.write_text(result.to_json())
        partial.replace(job.outcome_file)
    finally:
        distributed.close(world)
    if world.is_main:
        ctx.progress.stage("succeeded" if result.succeeded else "failed")
        write_result(ctx, result)
    return result.to_dict()
