"""The train stage in this process: the model resolved and the stage's inputs fetched
(once per node), then the trainer run with the run's hooks — the latent cache and each
checkpoint mirrored to the store, the loss curves and validation losses logged, the
previews rendered — and its outputs published.

The main rank (local rank 0 of node 0, or the only one) alone writes checkpoints,
outputs, the result and the log book; the others train their share of each step (with
the base sharded they also sample the previews in step, each forward gathering it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx_contract.billing import billable_units
from ltx_contract.outcomes import ExitCode
from ltx_contract.result import JobResult

from .context import JobContext
from .results import interrupted, publish, write_result

if TYPE_CHECKING:
    import torch

    from ..logbook import Logbook
    from ..model.loader import Model
    from ..preview.run import ValidationReels
    from ..training.distributed import World
    from ..training.trainer import Trainer, TrainerHooks, TrainResult

log = logging.getLogger(__name__)


def resolve_model(ctx: JobContext) -> Model:
    """The stage's model, checked (`choice.choose_model`)."""
    from ..model.choice import choose_model

    choice = choose_model(ctx.spec.model, ctx.model, ctx.text_encoder, local=ctx.local_run)
    return choice.resolve(ctx.model_cache or ctx.work_dir / "model-cache")


def fetch_train_inputs(ctx: JobContext) -> Model:
    """The model, and into the work folder the prepared dataset, the latent cache and the
    latest checkpoint from the store: once per node."""
    ctx.progress.stage("downloading")
    model = resolve_model(ctx)  # a model that cannot be used is refused before any work
    work = ctx.work_dir / "train"
    if ctx.store.get_tree(f"{ctx.run}/dataset", work / "dataset") == 0:
        raise RuntimeError("no prepared dataset in the store: the prepare stage must run first")
    if ctx.store.get_tree(f"{ctx.run}/cache", work / "cache"):
        log.info("latent cache downloaded")
    latest = _latest_checkpoint(ctx)
    if latest is not None:
        ctx.store.get_tree(f"{ctx.run}/checkpoints/{latest}", work / "checkpoints" / latest)
        log.info("checkpoint %s downloaded", latest)
        from ..training.trainer import BEST  # the best validation step's LoRA, kept so far

        ctx.store.get_tree(f"{ctx.run}/checkpoints/{BEST}", work / "checkpoints" / BEST)
    return model


def _latest_checkpoint(ctx: JobContext) -> str | None:
    prefix = f"{ctx.run}/checkpoints/"
    complete = sorted({k[len(prefix):].split("/")[0] for k in ctx.store.keys(prefix)
                       if k.endswith("/state.pt")})
    return complete[-1] if complete else None


def train_here(ctx: JobContext, model: Model, world: World, device: torch.device
               ) -> JobResult:
    """The train stage in this process: the one rank, or one of several (`world`)."""
    import torch

    from ..training.trainer import Trainer, TrainerHooks

    work = ctx.work_dir / "train"
    settings = ctx.train_settings
    if not world.is_main:  # with the base sharded, every rank samples the previews in step
        previews = _previews(ctx, model, work, device) if settings.shard_base else None
        trainer = Trainer(ctx.spec, model, work, device, settings, hooks=TrainerHooks(),
                          world=world, previews=previews)
        trained = trainer.train(work / "dataset")
        trainer.preview(None)
        trainer.release()
        return JobResult(stage="train", outcome="Succeeded", reason="Succeeded",
                         message=f"rank {world.rank} trained its share of {trained.steps} steps",
                         exit_code=int(ExitCode.SUCCESS), steps_completed=trained.steps)
    logbook = _open_logbook(ctx, work / "outputs")
    ctx.progress.stage("training")
    trainer = Trainer(ctx.spec, model, work, device, settings, world=world,
                      progress=lambda p: _report(ctx, logbook, p),
                      hooks=_hooks(ctx, logbook), previews=_previews(ctx, model, work, device,
                                                                     logbook))
    trained = trainer.train(work / "dataset")
    reel = trainer.preview(work / "outputs" / "validation_reel.mp4")
    logbook.preview(trained.steps, reel)
    result = _publish_outputs(ctx, trainer, trained, logbook, reel)
    trainer.release()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _previews(ctx: JobContext, model: Model, work: Path, device: torch.device,
              logbook: Logbook | None = None) -> ValidationReels:
    """The run's previews: with the log book (the main rank's), each one written and
    logged; without, sampled only (a rank taking part in the main rank's forwards)."""
    from ..preview.run import ValidationReels

    settings = ctx.train_settings
    return ValidationReels(ctx.spec, model, work, device, steps=settings.preview_steps,
                           seed=settings.seed,
                           max_sequence_length=settings.max_sequence_length,
                           folder=work / "previews" if logbook else None,
                           rendered=logbook.preview if logbook else None)


def _report(ctx: JobContext, logbook: Logbook, progress: Any) -> None:
    ctx.progress.step(progress.step, progress.total, progress.loss, progress.steps_per_second,
                      progress.eta_seconds, progress.losses)
    logbook.record(progress)


def _hooks(ctx: JobContext, logbook: Logbook) -> TrainerHooks:
    """The main rank's: the cache and each checkpoint mirrored to the store, each
    validation loss logged and reported."""
    from ..training.trainer import BEST, TrainerHooks
    from ..training.validation import SIGMAS, summary

    def upload_cache(cache: Path) -> None:
        if not ctx.store.keys(f"{ctx.run}/cache/index.json"):
            ctx.store.put_tree(cache, f"{ctx.run}/cache")

    def upload_checkpoint(path: Path) -> None:
        # the curves first: a pod lost once the checkpoint is complete keeps them too (a
        # resume from an earlier checkpoint drops the rows after it)
        _mirror_logbook(ctx, logbook)
        if (path.parent / BEST).is_dir():  # the best validation step's LoRA, kept so far
            ctx.store.put_tree(path.parent / BEST, f"{ctx.run}/checkpoints/{BEST}")
        ctx.store.put_tree(path, f"{ctx.run}/checkpoints/{path.name}")
        if ctx.local_run:  # a crash from here on resumes from this step
            write_result(ctx, interrupted("train", int(path.name.removeprefix("step-"))))

    def validated(evaluation: Any, history: list[Any]) -> None:
        logbook.record_validation(history, SIGMAS)
        ctx.progress.validation(summary(history))

    return TrainerHooks(upload_cache, upload_checkpoint, validated=validated)


def _publish_outputs(ctx: JobContext, trainer: Trainer, trained: TrainResult,
                     logbook: Logbook, reel: Path | None) -> JobResult:
    """The stage's result, with the LoRA, its config, the reel and the curves uploaded."""
    from ..training.trainer import BEST_LORA
    from ..training.validation import summary

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
    publish(ctx, result, "lora_file", trained.lora_file, "lora.safetensors")
    publish(ctx, result, "config_file", trained.config_file, "config.json")
    if trained.best_lora is not None:
        publish(ctx, result, "lora_best", trained.best_lora, BEST_LORA)
    if logbook.validation_table.is_file():
        publish(ctx, result, "validation_log", logbook.validation_table,
                logbook.validation_table.name)
    if reel is not None:
        publish(ctx, result, "video", reel, "validation_reel.mp4")
    if chart is not None:
        publish(ctx, result, "loss_chart", chart, "loss.png")
        publish(ctx, result, "loss_log", logbook.table, "loss.csv")
        result.artifacts.logs = _mirror_logbook(ctx, logbook, with_table=False)
    return result


def _open_logbook(ctx: JobContext, folder: Path) -> Logbook:
    """The run's log book, continued from the store's copy when this pod starts afresh
    (a preempted pod's successor: the curves up to its checkpoint are kept)."""
    from ..logbook import LOGS, TABLE, Logbook

    logbook = Logbook(folder)
    if not logbook.table.exists() and ctx.store.get_file(f"{ctx.run}/outputs/{TABLE}",
                                                         logbook.table):
        ctx.store.get_tree(f"{ctx.run}/outputs/{LOGS}", logbook.logs)
    return logbook


def _mirror_logbook(ctx: JobContext, logbook: Logbook, with_table: bool = True) -> str:
    """Upload the TensorBoard event files (and the CSV); the URL of their folder."""
    from ..logbook import LOGS, TABLE

    logbook.flush()
    prefix = f"{ctx.run}/outputs/{LOGS}"
    if logbook.logs.is_dir():
        ctx.store.put_tree(logbook.logs, prefix)
    if with_table and logbook.table.is_file():
        ctx.store.put_file(logbook.table, f"{ctx.run}/outputs/{TABLE}")
    return ctx.store.url(prefix)
