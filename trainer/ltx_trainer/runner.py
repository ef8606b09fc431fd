"""The job runner: the prepare and train stages as the operator's Jobs run them, and
both in one process for a local run.

Every exit path, failures included, leaves a result: a JSON manifest in the artifact
store (`<run>/result-<stage>.json`) and the pod's termination message (at most 4 KiB).
The process exit code tells the outcome class (see `outcomes.ExitCode`).

A local run's folder is derived from what it trains (`local_run_id`), so the same
command run again continues it: stages that succeeded are not run again and training
resumes from its last checkpoint. Before a local stage starts, its result already says
`Interrupted`; an attempt that is killed leaves exactly that behind.

With several ranks (`JobContext.ranks`), the launcher process of each node downloads the
stage's inputs once, then starts the ranks (`training/launch.py`); each runs
`train_rank`. The main rank (local rank 0 of node 0) alone writes checkpoints, outputs,
the result and the log book, serves `/progress` and writes previews (with the base
sharded every rank samples them in step, each forward gathering it); the launcher of
node 0 writes the termination message with the result, the others a short one. An
outcome a rank meets (invalid input, a download failure) is recorded in the node's work
folder and ends every rank: ranks started again after it see it and stop at once, so the
run fails with that rank's code and message without spending the restarts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx_contract.billing import billable_units
from ltx_contract.manifest import Manifest
from ltx_contract.outcomes import DiskFull, ExitCode, Outcome
from ltx_contract.result import JobResult
from ltx_contract.spec import TrainingSpec

from .dataset import FetchPolicy, PrepareSettings, prepare_dataset
from .progress import ProgressServer, ProgressState
from .store import Store

log = logging.getLogger(__name__)

STAGES = ("prepare", "train")
INTERRUPTED = "Interrupted"
DISK_FULL_MARGIN = 2**20  # bytes: less room than this after a failure means a full disk


def local_run_id(spec: TrainingSpec, name: str, model: str | None, seed: int,
                 max_sequence_length: int) -> str:
    """`local/<name>/<digest>`: the same spec, model and seed give the same folder."""
    plain = re.sub(r"\.\.+", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", name))[:63].strip(".-_")
    plain = plain or "training"
    what = {"spec": json.loads(spec.to_json()), "model": model, "seed": seed,
            "maxSequenceLength": max_sequence_length}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return f"local/{plain}/{digest}"


@dataclass
class JobContext:
    spec: TrainingSpec
    store: Store
    run: str  # "<namespace>/<name>/<uid>": the resource's folder in the store
    work_dir: Path
    #: a folder or a single-file checkpoint, or a store URL of either (None: spec.model's)
    model: Path | str | None = None
    #: the Gemma-3 folder of a single-file checkpoint (None: spec.model.textEncoder's)
    text_encoder: Path | str | None = None
    model_cache: Path | None = None  # where a model given by URL is downloaded
    #: a local `ltx-extend train`: the tiny model stands in for a missing base model,
    #: and results record an attempt that stops half-way
    local_run: bool = False
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    termination_log: Path | None = None
    progress: ProgressState = field(default_factory=ProgressState)
    train_settings: Any = None
    device: Any = None
    #: `training.launch.Ranks`: more than one starts the train stage's ranks
    ranks: Any = None
    #: where the main rank serves `/progress` when the stage runs in ranks
    progress_port: int | None = None
    progress_host: str = "0.0.0.0"
    store_location: str | None = None  # what the store was opened from (a rank opens it again)

    @property
    def in_ranks(self) -> bool:
        return self.ranks is not None and self.ranks.total > 1

    @property
    def main_node(self) -> bool:
        """This pod writes the run's result (node 0, or the only one)."""
        return self.ranks is None or self.ranks.node_rank == 0


def run_stage(stage: str, ctx: JobContext) -> JobResult:
    """Run one stage; never raises: every outcome becomes a Result, written out."""
    try:
        result = {"prepare": _prepare, "train": _train}[stage](ctx)
    except Outcome as exc:
        result = _failed(stage, exc)
    except Exception as exc:  # an internal error: reported, logged in full, bills 0
        if _disk_full(exc, ctx.work_dir):
            log.error("the %s stage ran out of disk:\n%s", stage, traceback.format_exc())
            result = _failed(stage, DiskFull(stage))
        else:
            log.error("internal error in the %s stage:\n%s", stage, traceback.format_exc())
            result = JobResult(
                stage=stage, outcome="Failed", reason="InternalError",
                message=f"internal error in the {stage} stage: {type(exc).__name__}: {exc}",
                exit_code=int(ExitCode.INTERNAL_ERROR))
    ctx.progress.stage("succeeded" if result.succeeded else "failed")
    write_result(ctx, result)
    return result


def _failed(stage: str, exc: Outcome) -> JobResult:
    return JobResult(stage=stage, outcome="Failed", reason=exc.reason, message=exc.message,
                     exit_code=int(exc.exit_code))


def _disk_full(exc: BaseException | None, work: Path) -> bool:
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


def _prepare(ctx: JobContext) -> JobResult:
    ctx.progress.stage("preparing")
    work = ctx.work_dir / "prepare"
    prepare_dataset(ctx.spec, work, PrepareSettings(fetch=ctx.fetch))
    manifest = Manifest.read(work / "dataset")
    ctx.progress.stage("uploading")
    ctx.store.put_tree(work / "dataset", f"{ctx.run}/dataset")
    result = JobResult(stage="prepare", outcome="Succeeded", reason="DatasetReady",
                       message=f"{len(manifest.samples)} training samples and "
                       f"{len(manifest.validation)} validation clips ready",
                       exit_code=int(ExitCode.SUCCESS), samples=len(manifest.samples),
                       uncaptioned_samples=manifest.uncaptioned_samples)
    if ctx.spec.debug_dataset:
        _publish(ctx, result, "debug_dataset", work / "debug_dataset.zip", "debug_dataset.zip")
    return result


def _publish(ctx: JobContext, result: JobResult, name: str, local: Path, filename: str
             ) -> None:
    """Upload one output; `name` is its field in `Artifacts` (e.g. lora_file)."""
    key = f"{ctx.run}/outputs/{filename}"
    setattr(result.artifacts, name, ctx.store.put_file(local, key))
    setattr(result.download_urls, name, ctx.store.download_url(key))


def _open_logbook(ctx: JobContext, folder: Path) -> Any:
    """The run's log book, continued from the store's copy when this pod starts afresh
    (a preempted pod's successor: the curves up to its checkpoint are kept)."""
    from .logbook import LOGS, TABLE, Logbook

    logbook = Logbook(folder)
    if not logbook.table.exists() and ctx.store.get_file(f"{ctx.run}/outputs/{TABLE}",
                                                         logbook.table):
        ctx.store.get_tree(f"{ctx.run}/outputs/{LOGS}", logbook.logs)
    return logbook


def _mirror_logbook(ctx: JobContext, logbook: Any, with_table: bool = True) -> str:
    """Upload the TensorBoard event files (and the CSV); the URL of their folder."""
    from .logbook import LOGS, TABLE

    logbook.flush()
    prefix = f"{ctx.run}/outputs/{LOGS}"
    if logbook.logs.is_dir():
        ctx.store.put_tree(logbook.logs, prefix)
    if with_table and logbook.table.is_file():
        ctx.store.put_file(logbook.table, f"{ctx.run}/outputs/{TABLE}")
    return ctx.store.url(prefix)


def _latest_checkpoint(ctx: JobContext) -> str | None:
    prefix = f"{ctx.run}/checkpoints/"
    complete = sorted({k[len(prefix):].split("/")[0] for k in ctx.store.keys(prefix)
                       if k.endswith("/state.pt")})
    return complete[-1] if complete else None


def _resolve_model(ctx: JobContext) -> Any:
    """The stage's model (`loader.Model`), checked (`choice.choose_model`)."""
    from .model.choice import choose_model

    choice = choose_model(ctx.spec.model, ctx.model, ctx.text_encoder, local=ctx.local_run)
    return choice.resolve(ctx.model_cache or ctx.work_dir / "model-cache")


def _train(ctx: JobContext) -> JobResult:
    from .model.loader import default_device
    from .training.distributed import SINGLE

    model = _fetch_train_inputs(ctx)
    if ctx.in_ranks:
        return _launch_ranks(ctx, model)
    return _train_here(ctx, model, SINGLE, ctx.device or default_device())


def _fetch_train_inputs(ctx: JobContext) -> Any:
    """The model, and into the work folder the prepared dataset, the latent cache and the
    latest checkpoint from the store: once per node."""
    ctx.progress.stage("downloading")
    model = _resolve_model(ctx)  # a model that cannot be used is refused before any work
    work = ctx.work_dir / "train"
    if ctx.store.get_tree(f"{ctx.run}/dataset", work / "dataset") == 0:
        raise RuntimeError("no prepared dataset in the store: the prepare stage must run first")
    if ctx.store.get_tree(f"{ctx.run}/cache", work / "cache"):
        log.info("latent cache downloaded")
    latest = _latest_checkpoint(ctx)
    if latest is not None:
        ctx.store.get_tree(f"{ctx.run}/checkpoints/{latest}", work / "checkpoints" / latest)
        log.info("checkpoint %s downloaded", latest)
        from .training.trainer import BEST  # the best validation step's LoRA, kept so far

        ctx.store.get_tree(f"{ctx.run}/checkpoints/{BEST}", work / "checkpoints" / BEST)
    return model


def _train_here(ctx: JobContext, model: Any, world: Any, device: Any) -> JobResult:
    """The train stage in this process: the one rank, or one of several (`world`)."""
    import torch

    from .training.trainer import BEST, BEST_LORA, Trainer, TrainerHooks, TrainSettings
    from .training.validation import SIGMAS, summary

    work = ctx.work_dir / "train"

    def upload_cache(cache: Path) -> None:
        if not ctx.store.keys(f"{ctx.run}/cache/index.json"):
            ctx.store.put_tree(cache, f"{ctx.run}/cache")

    logbook = _open_logbook(ctx, work / "outputs") if world.is_main else None

    def upload_checkpoint(path: Path) -> None:
        # the curves first: a pod lost once the checkpoint is complete keeps them too (a
        # resume from an earlier checkpoint drops the rows after it)
        _mirror_logbook(ctx, logbook)
        if (path.parent / BEST).is_dir():  # the best validation step's LoRA, kept so far
            ctx.store.put_tree(path.parent / BEST, f"{ctx.run}/checkpoints/{BEST}")
        ctx.store.put_tree(path, f"{ctx.run}/checkpoints/{path.name}")
        if ctx.local_run:  # a crash from here on resumes from this step
            write_result(ctx, interrupted("train", int(path.name.removeprefix("step-"))))

    def report(progress: Any) -> None:
        ctx.progress.step(progress.step, progress.total, progress.loss,
                          progress.steps_per_second, progress.eta_seconds, progress.losses)
        logbook.record(progress)

    if world.is_main:
        ctx.progress.stage("training")
    from .preview.run import load_preview_models, render_reel

    def validated(evaluation: Any, history: list[Any]) -> None:
        logbook.record_validation(history, SIGMAS)
        ctx.progress.validation(summary(history))

    settings = ctx.train_settings or TrainSettings()
    hooks = TrainerHooks(upload_cache, upload_checkpoint, validated=validated) \
        if world.is_main else TrainerHooks()
    trainer = Trainer(ctx.spec, model, work, device, settings,
                      progress=report if world.is_main else None, hooks=hooks, world=world)

    def previews(dest: Path | None) -> Path | None:
        """The validation reel with the trainer's LoRA as it is now (None without
        validation): previews run beside training, on its live transformer. With the base
        sharded every rank samples in step (each forward gathers the base from all of
        them); `dest` None: this rank only takes part, the main rank writes."""
        if not ctx.spec.validation:
            return None
        models = load_preview_models(model, trainer.transformer, trainer.connectors,
                                     device, ctx.spec.with_audio)
        return render_reel(ctx.spec, work / "dataset", work / "cache", models, trainer.profile,
                           dest, steps=settings.preview_steps, seed=settings.seed,
                           max_sequence_length=settings.max_sequence_length)

    if not world.is_main:
        if settings.shard_base:
            trainer.hooks.preview = lambda step: previews(None)
        trained = trainer.train(work / "dataset")
        if settings.shard_base:
            previews(None)
        trainer.release()
        return JobResult(stage="train", outcome="Succeeded", reason="Succeeded",
                         message=f"rank {world.rank} trained its share of {trained.steps} steps",
                         exit_code=int(ExitCode.SUCCESS), steps_completed=trained.steps)

    trainer.hooks.preview = lambda step: logbook.preview(
        step, previews(work / "previews" / f"step-{step:06d}.mp4"))
    trained = trainer.train(work / "dataset")
    reel = previews(work / "outputs" / "validation_reel.mp4")
    logbook.preview(trained.steps, reel)
    chart = logbook.close()
    ctx.progress.stage("uploading")
    units = billable_units(trained.steps, succeeded=True)
    validation = summary(trained.validation)
    message = f"trained {trained.steps} steps; final loss {trained.losses[-1]:.4f}"
    if validation is not None:
        on = "held-out clips" if validation.held_out else "training windows"
        message += (f"; validation loss {validation.loss:.4f} ({on}), best "
                    f"{validation.best_loss:.4f} at step {validation.best_step}")
    result = JobResult(
        stage="train", outcome="Succeeded", reason="Succeeded", message=message,
        exit_code=int(ExitCode.SUCCESS), steps_completed=trained.steps, billable_units=units,
        model_version=trainer.profile.name, validation=validation)
    _publish(ctx, result, "lora_file", trained.lora_file, "lora.safetensors")
    _publish(ctx, result, "config_file", trained.config_file, "config.json")
    if trained.best_lora is not None:
        _publish(ctx, result, "lora_best", trained.best_lora, BEST_LORA)
    if logbook.validation_table.is_file():
        _publish(ctx, result, "validation_log", logbook.validation_table,
                 logbook.validation_table.name)
    if reel is not None:
        _publish(ctx, result, "video", reel, "validation_reel.mp4")
    if chart is not None:
        _publish(ctx, result, "loss_chart", chart, "loss.png")
        _publish(ctx, result, "loss_log", logbook.table, "loss.csv")
        result.artifacts.logs = _mirror_logbook(ctx, logbook, with_table=False)
    trainer.release()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


@dataclass
class RankJob:
    """What a rank needs to run the train stage (picklable: it crosses `spawn`)."""

    ctx: JobContext  # with no termination log: the launcher writes it
    model: Any

    @property
    def outcome_file(self) -> Path:
        return self.ctx.work_dir / "train" / "ranks" / "outcome.json"


def _launch_ranks(ctx: JobContext, model: Any) -> JobResult:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .training.launch import launch

    # a store given by its location is opened again in each rank (an S3 client does not
    # pickle); a store object alone (a folder) travels as it is
    store = None if ctx.store_location else ctx.store
    job = RankJob(_replace(ctx, termination_log=None, progress=None, store=store), model)
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
    from ltx_contract.outcomes import Outcome

    from .training import distributed

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if job.outcome_file.is_file():  # met by a rank of an earlier attempt: the run's end
        return json.loads(job.outcome_file.read_text())
    from .store import open_store

    ctx = _replace(job.ctx, progress=ProgressState(),
                   store=job.ctx.store or open_store(job.ctx.store_location))
    world, device = distributed.init(distributed.World.from_env(),
                                     ctx.train_settings.collective_timeout)
    serve = world.is_main and ctx.progress_port is not None
    try:
        with ProgressServer(ctx.progress, ctx.progress_port, ctx.progress_host) if serve \
                else nullcontext():
            result = _train_here(ctx, job.model, world, device)
    except Outcome as exc:
        result = _failed("train", exc)
        partial = job.outcome_file.with_name(f".outcome-{world.rank}")
        partial.write_text(result.to_json())
        partial.replace(job.outcome_file)
    finally:
        distributed.close(world)
    if world.is_main:
        ctx.progress.stage("succeeded" if result.succeeded else "failed")
        write_result(ctx, result)
    return result.to_dict()


def _replace(ctx: JobContext, **changes: Any) -> JobContext:
    from dataclasses import replace

    return replace(ctx, **changes)


def run_local(ctx: JobContext) -> list[JobResult]:
    """Prepare then train in one process (the quick start), continuing the run folder
    where an earlier attempt stopped. Stops at the first failure."""
    ctx.store.put_json(f"{ctx.run}/spec.json", json.loads(ctx.spec.to_json()))
    results = []
    for stage in STAGES:
        earlier = read_result(ctx, stage)
        if earlier is not None and earlier.succeeded:
            log.info("the %s stage succeeded in an earlier attempt; not run again", stage)
            results.append(earlier)
            continue
        if earlier is not None and earlier.reason == INTERRUPTED:
            log.info("continuing: %s", earlier.message)
        write_result(ctx, interrupted(stage, earlier.steps_completed if earlier else 0))
        results.append(run_stage(stage, ctx))
        if not results[-1].succeeded:
            break
    final = results[-1]
    if final.succeeded:
        # what the stages published (debug archive, LoRA, config, reel) in one result
        for earlier in results[:-1]:
            for field_name in ("artifacts", "download_urls"):
                merged = getattr(earlier, field_name).model_copy(
                    update=getattr(final, field_name).model_dump(exclude_none=True))
                setattr(final, field_name, merged)
    return results
