"""The training loop: LoRA on the LTX-2 transformer with the extend-suffix strategy.

Deterministic: every step's global batch is one sample per slot, each slot drawing its
sample, sigmas and noise from (seed, step, slot) (`draw`), so a run resumed from a
checkpoint takes exactly the steps an uninterrupted run would and ends with the same LoRA.
The slots are the ranks of a data-parallel run (`distributed.py`) times `accumulate`, the
samples each process takes per step; the gradients are summed over every slot and divided
by their number, so two ranks train the same LoRA as one process accumulating two, and a
checkpoint resumes at any world size. Whether each rank holds the whole transformer or a
shard of its frozen base is its placement's business (`placement.py`): the loop asks the
placement, never which one it runs under. Only the main rank writes. A non-finite loss or
gradient stops the run at once (`Diverged`) before the optimizer takes the step, so no
checkpoint is ever written from a bad state and the last good one stays.

The frozen text connectors run once per caption, at its first step, not in every step:
their outputs are kept for the rest of the run beside the cached Gemma features. What
else makes a step fast (fused AdamW, checkpointing only the blocks the GPU's memory
needs, regional compilation, the attention kernels) is `speed.py`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ltx_contract.outcomes import Diverged, InvalidInput
from ltx_contract.spec import TrainingSpec
from ltx_contract.suffix import SuffixWindow

from ..codec.text import pad_left
from ..model.adapter import add_lora
from ..model.forward import (
    ATTENTION_BACKENDS,
    TextContext,
    attention_kernels,
    connect_text,
    predict,
)
from ..model.loader import ModelLike, as_model
from ..model.low_memory import quantize_frozen
from . import distributed
from .checkpoints import Checkpoints, TrainingState, restore_rng_state
from .distributed import SINGLE, World
from .lora import training_config, write_lora_file
from .placement import placement
from .preprocess import encode_dataset, load_sample
from .schedule import make_scheduler
from .settings import TrainSettings
from .sharding import check_combination
from .speed import checkpoint_blocks, compile_blocks, make_optimizer
from .strategy import StepInputs, SuffixStrategy
from .validation import Evaluation, Validator, windows

log = logging.getLogger(__name__)

#: the LoRA of the best validation step: `checkpoints/best/` while training, then this
#: output beside `lora.safetensors` when that step is not the last
BEST, BEST_STEP, BEST_LORA = "best", "step.json", "lora_best.safetensors"


@dataclass
class StepReport:
    """What one optimizer step reports (for `/progress`, logs and loss curves)."""

    step: int
    total: int
    loss: float
    steps_per_second: float
    eta_seconds: float
    losses: dict[str, float] = field(default_factory=dict)  # per trained modality + "total"
    sigmas: dict[str, float] = field(default_factory=dict)  # each trained modality's noise
    learning_rate: float = 0.0  # the rate this step was taken at
    grad_norm: float = 0.0  # before clipping


@dataclass
class TrainResult:
    lora_file: Path | None  # None on a rank that does not write
    config_file: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    #: the validation loss at each step it was computed, and the LoRA of the best one
    #: when that is not the last step
    validation: list[Evaluation] = field(default_factory=list)
    best_lora: Path | None = None


ProgressCallback = Callable[[StepReport], None]


@dataclass
class TrainerHooks:
    """Called as the run goes, so a job can mirror its state to the artifact store."""

    cache_ready: Callable[[Path], None] | None = None
    checkpoint_saved: Callable[[Path], None] | None = None
    #: each validation loss, with every one so far (the history, a resumed run's included)
    validated: Callable[[Evaluation, list[Evaluation]], None] | None = None


class Previews(Protocol):
    """The run's previews, rendered on the live transformer and connectors the trainer
    hands over (`preview.run.ValidationReels`)."""

    def at_step(self, step: int, transformer: Any, connectors: Any) -> None:
        """Every `preview_every` steps, before the last."""

    def render(self, transformer: Any, connectors: Any, dest: Path | None) -> Path | None:
        """The reel written to `dest` (None: sampled, not written), or None without
        validation clips."""


class Interrupted(Exception):
    """Raised when a run is told to stop after a number of steps (tests, preemption drills)."""


def step_generator(seed: int, step: int, slot: int = 0) -> torch.Generator:
    """The noise of one slot of a step's global batch (slot 0: a one-rank run's)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step + slot * 1_000_000_007_001)
                                         % 2**63)


def draw(seed: int, step: int, slot: int, batch: int, count: int
         ) -> tuple[int, torch.Generator]:
    """Slot `slot` of the global batch of `batch` samples at `step`: the index of its
    sample among the `count` cached ones (every sample once per epoch, in an order drawn
    from the seed) and the generator of its sigmas and noise."""
    epoch, position = divmod(step * batch + slot, count)
    return _sample_order(seed, epoch, count)[position], step_generator(seed, step, slot)


def _sample_order(seed: int, epoch: int, count: int) -> list[int]:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


class Trainer:
    def __init__(self, spec: TrainingSpec, model: ModelLike, work_dir: Path,
                 device: torch.device, settings: TrainSettings | None = None,
                 progress: ProgressCallback | None = None, hooks: TrainerHooks | None = None,
                 world: World = SINGLE, previews: Previews | None = None):
        """`model`: the base model (`model.loader.Model`: a folder, a checkpoint, or random
        weights of a release's shapes), or a folder's path. `world`: this rank's place
        among the ranks (`distributed.init`); all of them construct a Trainer and call
        `train`. `previews`: rendered every `preview_every` steps and by `preview`."""
        self.spec, self.model, self.work_dir = spec, as_model(model), work_dir
        self.device, self.settings = device, settings or TrainSettings()
        self.world = world
        self.progress = progress
        self.hooks = hooks or TrainerHooks()
        self.previews = previews
        self.checkpoints = Checkpoints(work_dir / "checkpoints", self.settings.keep_checkpoints)
        self.profile = self.model.profile
        if not self.profile.dynamic_shifting:
            raise InvalidInput(
                f"the model {self.model.name} cannot be trained: its scheduler does not "
                "use dynamic shifting, the mark of a distilled checkpoint (a fixed few-step "
                "schedule); train on the dev (non-distilled) model")
        _check_settings(self.settings, self.profile.num_layers, world)
        #: whole on every rank or its base sharded: the one place the loop learns which
        self.placement = placement(self.settings.shard_base, world)
        self._captions: dict[str, TextContext] = {}
        #: (rank, sample id) per slot of each step since the run began, in slot order
        self.batches: list[list[tuple[int, str]]] = []

    @property
    def global_batch(self) -> int:
        return self.world.size * self.settings.accumulate

    def slots(self) -> range:
        """The slots of each step's global batch this process trains."""
        first = self.world.rank * self.settings.accumulate
        return range(first, first + self.settings.accumulate)

    # -- model ---------------------------------------------------------------------------
    def _load(self) -> None:
        from diffusers.training_utils import cast_training_params

        settings = self.settings
        self.transformer = self.model.load("transformer", self.device)
        self.connectors = self.model.load("connectors", self.device)
        self.strategy = SuffixStrategy.for_training(
            self.spec, self.profile, self.transformer.config.audio_in_channels)
        torch.manual_seed(settings.seed)  # LoRA A matrices start from the seed
        add_lora(self.transformer, self.spec.rank, self.strategy.modalities)
        cast_training_params(self.transformer, dtype=torch.float32)  # LoRA in fp32 on a bf16 base
        if settings.low_memory:
            quantize_frozen(self.transformer)
        blocks = settings.checkpointed_blocks
        if blocks is None:
            blocks = self.placement.checkpointed_blocks(
                self.model.shapes, self.spec, settings.max_sequence_length, self.device,
                settings.low_memory)
        self.checkpointed = checkpoint_blocks(self.transformer, blocks)
        self.placement.wrap(self.transformer, self.device)  # before the optimizer is made
        if settings.compile_backend:
            compile_blocks(self.transformer, settings.compile_backend)
        self.transformer.train()
        self.params = [p for p in self.transformer.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, self.spec.learning_rate,
                                        settings.weight_decay, self.device,
                                        low_memory=settings.low_memory)
        # learningRate is the peak; linear decay to a tenth at the last step (`schedule.py`)
        self.scheduler = make_scheduler(self.optimizer, self.spec.number_of_steps,
                                        settings.warmup_steps)

    @torch.no_grad()
    def text_context(self, embeds: torch.Tensor) -> TextContext:
        """Cached Gemma features of one prompt → the connectors' outputs on the device."""
        padded, mask = pad_left(embeds, self.settings.max_sequence_length, self.device,
                                self.connectors.dtype)
        return connect_text(self.connectors, padded, mask)

    def caption_context(self, key: str, embeds: torch.Tensor) -> TextContext:
        """The connectors' outputs for the cached caption `key` (Gemma features `embeds`):
        computed at its first use and kept for the run (in host memory beside a GPU)."""
        kept = self._captions.get(key)
        if kept is None:
            home = torch.device("cpu") if self.device.type == "cuda" else self.device
            kept = self._captions[key] = self.text_context(embeds).to(home)
        return kept.to(self.device)

    def loss(self, inputs: StepInputs, text: torch.Tensor | TextContext
             ) -> dict[str, torch.Tensor]:
        """The step's losses; `text` is a caption's connector outputs, or its Gemma
        features (then the connectors run in this call)."""
        context = text if isinstance(text, TextContext) else self.text_context(text)
        video, audio = predict(self.transformer, self.profile, inputs.video.state,
                               inputs.audio.state, context, inputs.geometry,
                               isolate=not self.strategy.trains_audio,
                               attention=self.settings.attention_backend)
        return self.strategy.loss({"video": video, "audio": audio}, inputs)

    def prepare(self, cached: dict[str, torch.Tensor], suffix: SuffixWindow,
                generator: torch.Generator, sigma: float | None = None) -> StepInputs:
        return self.strategy.prepare(cached, suffix, generator, self.device, sigma)

    def backward(self, inputs: StepInputs, text: torch.Tensor | TextContext
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One sample's losses and the clipped gradients' total norm (`backward_batch`)."""
        return self.backward_batch([(inputs, text)])

    def backward_batch(self, batch: list[tuple[StepInputs, torch.Tensor | TextContext]]
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """This process's samples of the step: the losses (the mean over the global batch)
        and the total norm of the gradients averaged over the global batch, then clipped;
        on the device (no host sync)."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for inputs, text in batch:
            losses = self.loss(inputs, text)
            # the checkpointed blocks' forwards run again in here, on the same kernels
            with attention_kernels(self.settings.attention_backend, self.device):
                losses["total"].backward()  # gradients summed over the samples
            for name, value in losses.items():
                sums[name] = sums.get(name, 0) + value.detach().float()
        norm = self.placement.reduce_and_clip(self.params, len(batch),
                                              self.settings.max_grad_norm)
        names = sorted(sums)
        means = distributed.mean_over_ranks(
            self.world, torch.stack([sums[n] for n in names]) / len(batch))
        return dict(zip(names, means.unbind(), strict=True)), norm

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()

    def _encode(self, dataset_dir: Path) -> dict[str, Any]:
        """The latent cache's index, encoding first if the cache is not there yet."""
        return encode_dataset(dataset_dir, self.work_dir / "cache", self.model, self.device,
                              with_audio=self.spec.with_audio,
                              max_sequence_length=self.settings.max_sequence_length,
                              negative_prompt=self.spec.validation_negative_prompt,
                              world=self.world)

    def _suffix(self, meta: dict[str, Any]) -> SuffixWindow:
        return SuffixWindow(meta["frames"], meta["frameRate"], self.spec.conditioning_frames)

    # -- state ---------------------------------------------------------------------------
    def _resume(self) -> tuple[int, list[float]]:
        """Continue from the main rank's latest checkpoint, whatever world size wrote it:
        the state is the LoRA, the optimizer's and the scheduler's, which no rank owns."""
        latest = self.checkpoints.latest() if self.world.is_main else None
        state = TrainingState.load(latest / "state.pt") if latest is not None else None
        state = distributed.broadcast_object(self.world, state)  # no shared disk needed
        if state is None:
            return 0, []
        self.placement.load(self.transformer, self.optimizer, state.lora, state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        restore_rng_state(state.rng)
        if getattr(self, "validator", None) is not None:
            self.validator.history = [Evaluation.from_dict(e) for e in state.validation]
        kept = [[tuple(slot) for slot in batch] for batch in state.batches[:state.step]]
        self.batches = kept + [[] for _ in range(state.step - len(kept))]
        if latest is not None:
            log.info("resumed from %s (step %d)", latest.name, state.step)
        return state.step, state.losses

    def _checkpoint(self, step: int, losses: list[float]) -> None:
        # collectives where the base is sharded: every rank takes part
        lora, lora_file = self.placement.lora_state(self.transformer)
        optimizer = self.placement.optimizer_state(self.transformer, self.optimizer)
        if not self.world.is_main:
            return
        validator = getattr(self, "validator", None)
        state = TrainingState(step=step, lora=lora, optimizer=optimizer,
                              scheduler=self.scheduler.state_dict(), losses=losses,
                              batches=self.batches,
                              validation=[e.to_dict() for e in validator.history]
                              if validator is not None else [])
        path = self.checkpoints.save(state, lora_file)
        log.info("checkpoint %s", path.name)
        if self.hooks.checkpoint_saved is not None:
            self.hooks.checkpoint_saved(path)

    # -- the loop ------------------------------------------------------------------------
    def train(self, dataset_dir: Path, stop_after: int | None = None) -> TrainResult:
        spec, settings = self.spec, self.settings
        index = self._encode(dataset_dir)
        if self.hooks.cache_ready is not None:
            self.hooks.cache_ready(self.work_dir / "cache")
        # held-out windows are in the cache but never drawn for a step
        samples = [s for s in index["samples"] if not s.get("heldOut")]
        self.validator = Validator(*windows(index["samples"]), self.work_dir / "cache")
        self._load()
        start, losses = self._resume()
        total = spec.number_of_steps
        bar = _progress_bar(total, start)
        began, done_here = time.perf_counter(), 0
        for step in range(start, total):
            batch, drawn = [], []
            for slot in self.slots():
                which, generator = draw(settings.seed, step, slot, self.global_batch,
                                        len(samples))
                meta = samples[which]
                cached = load_sample(self.work_dir / "cache", meta)
                inputs = self.prepare(cached, self._suffix(meta), generator)
                batch.append((inputs, self.caption_context(meta["caption"], cached["text"])))
                drawn.append((self.world.rank, meta["id"]))
            step_losses, norm = self.backward_batch(batch)
            names = sorted(step_losses)
            *values, grad_norm = torch.stack([step_losses[n].detach().float() for n in names]
                                             + [norm.detach().float()]).tolist()  # one sync
            reported = dict(zip(names, values, strict=True))
            loss = reported["total"]
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                bar.close()
                raise Diverged(
                    f"training diverged at step {step + 1}: the loss is {loss} and the "
                    f"gradient norm {grad_norm}. The learning rate ({spec.learning_rate:g}) is "
                    "too high for this data: lower learningRate and train again")
            learning_rate = self.scheduler.get_last_lr()[0]
            self.optimizer_step()
            self.batches.append(drawn)
            losses.append(round(loss, 6))
            done_here += 1
            rate = done_here / max(time.perf_counter() - began, 1e-9)
            self._report(bar, StepReport(
                step + 1, total, losses[-1], rate, (total - step - 1) / max(rate, 1e-9),
                losses=reported, learning_rate=learning_rate, grad_norm=grad_norm,
                sigmas={m: inputs.streams[m].state.sigma for m in self.strategy.modalities}))
            if self._validation_due(step + 1, total):
                self._validate(step + 1, total)
            if (step + 1) % settings.checkpoint_every == 0 or step + 1 == total:
                self._gather_batches(start)
                self._checkpoint(step + 1, losses)
            if settings.preview_every and (step + 1) % settings.preview_every == 0 \
                    and step + 1 < total and self.previews is not None:
                self.previews.at_step(step + 1, self.transformer, self.connectors)
            if stop_after is not None and step + 1 >= stop_after and step + 1 < total:
                bar.close()
                raise Interrupted(f"stopped after step {step + 1}")
        bar.close()
        return self._write_outputs(total, losses)

    # -- the validation loss ---------------------------------------------------------------
    def _validation_due(self, step: int, total: int) -> bool:
        every = self.settings.validation_every or self.settings.checkpoint_every
        return step % every == 0 or step == total

    def _validate(self, step: int, total: int) -> None:
        """The validation loss at `step`; a new best before the last step keeps its LoRA
        (`checkpoints/best/`, mirrored with the next checkpoint). Every rank computes it
        (a sharded base needs them all in each forward); the main rank's figure decides."""
        evaluation = distributed.broadcast_object(self.world, self.validator.evaluate(self, step))
        self.validator.record(evaluation)
        if self.validator.best is evaluation and step < total:
            self._keep_best(step)
        if not self.world.is_main:
            return
        best = self.validator.best
        log.info("validation loss at step %d: %.4f on %d %s window(s); best %.4f at step %d",
                 step, evaluation.loss, evaluation.windows,
                 "held-out" if evaluation.held_out else "training", best.loss, best.step)
        if self.hooks.validated is not None:
            self.hooks.validated(evaluation, list(self.validator.history))

    def _keep_best(self, step: int) -> None:
        weights = self.placement.lora_file(self.transformer)  # every rank takes part
        if not self.world.is_main:
            return
        folder = self.work_dir / "checkpoints" / BEST
        partial = folder.with_name(f".partial-{BEST}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        config = {**self._config(), "steps": step}
        write_lora_file(self.transformer, config, partial / "lora.safetensors", weights)
        (partial / BEST_STEP).write_text(json.dumps({"step": step}))
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)

    def _best_lora(self, last: int) -> Path | None:
        """The kept LoRA of the best validation step, when that is not the last step."""
        best = self.validator.best if getattr(self, "validator", None) else None
        folder = self.work_dir / "checkpoints" / BEST
        if best is None or best.step == last or not (folder / BEST_STEP).is_file():
            return None
        kept = json.loads((folder / BEST_STEP).read_text())["step"]
        if kept != best.step:  # cannot happen with deterministic steps; never mislabel one
            log.warning("the kept best LoRA is of step %d, not %d: not published", kept,
                        best.step)
            return None
        return folder / "lora.safetensors"

    def _gather_batches(self, start: int) -> None:
        """Merge the slots every rank trained since the last gather into `batches` (each
        rank records its own; the main rank's copy is the one checkpointed)."""
        done = len(self.batches)
        first = next((i for i in range(start, done) if len(self.batches[i]) < self.global_batch),
                     done)
        mine = self.batches[first:]
        if not self.world.distributed or not mine:
            return
        every = distributed.gather_objects(self.world, mine)
        self.batches[first:] = [[slot for rank in every for slot in rank[i]]
                                for i in range(len(mine))]

    def preview(self, dest: Path | None) -> Path | None:
        """The previews with the LoRA as it is now, written to `dest` (None: sampled only,
        by a rank the main rank's forwards need); None without previews."""
        if self.previews is None:
            return None
        return self.previews.render(self.transformer, self.connectors, dest)

    def release(self) -> None:
        """Drop the model and optimizer, so their memory can be freed."""
        for name in ("transformer", "connectors", "params", "optimizer", "scheduler"):
            self.__dict__.pop(name, None)
        self._captions.clear()

    def _report(self, bar: Any, progress: StepReport) -> None:
        if not self.world.is_main:
            return
        bar.update(1)
        bar.set_postfix(loss=f"{progress.loss:.4f}")
        if bar.disable and (progress.step % self.settings.log_every == 0
                            or progress.step == progress.total):
            log.info("step %d/%d loss %.4f %.2f steps/s", progress.step, progress.total,
                     progress.loss, progress.steps_per_second)
        if self.progress is not None:
            self.progress(progress)

    def _write_outputs(self, steps: int, losses: list[float]) -> TrainResult:
        weights = self.placement.lora_file(self.transformer)  # every rank takes part
        if not self.world.is_main:
            return TrainResult(None, None, steps, losses)
        out = self.work_dir / "outputs"
        out.mkdir(parents=True, exist_ok=True)
        config = self._config()
        lora_file = write_lora_file(self.transformer, config, out / "lora.safetensors", weights)
        config_file = out / "config.json"
        config_file.write_text(json.dumps(config, indent=2))
        best = self._best_lora(steps)
        if best is not None:
            best = Path(shutil.copyfile(best, out / BEST_LORA))
        history = list(self.validator.history) if getattr(self, "validator", None) else []
        return TrainResult(lora_file, config_file, steps, losses, history, best)

    def _config(self) -> dict[str, Any]:
        config = training_config(self.spec, self.model.name, version=self.profile.version,
                                 max_sequence_length=self.settings.max_sequence_length,
                                 seed=self.settings.seed)
        # each step averages the gradients of `globalBatch` samples: one per rank (times
        # the samples a rank accumulates)
        config.update(ranks=self.world.size, globalBatch=self.global_batch)
        return config


def _check_settings(settings: TrainSettings, depth: int, world: World) -> None:
    if settings.validation_every < 0:
        raise InvalidInput(f"--validation-every must be 0 (at each checkpoint) or more steps, "
                           f"not {settings.validation_every}")
    if settings.accumulate < 1:
        raise InvalidInput(f"accumulate must be 1 or more samples per step, not "
                           f"{settings.accumulate}")
    check_combination(settings.shard_base, settings.low_memory)
    blocks = settings.checkpointed_blocks
    if blocks is not None and not 0 <= blocks <= depth:
        raise InvalidInput(f"checkpointed blocks must be between 0 and the model's {depth} "
                           f"transformer blocks, not {blocks}")
    if settings.attention_backend not in ATTENTION_BACKENDS:
        raise InvalidInput(f"unknown attention backend {settings.attention_backend!r}: "
                           f"choose one of {', '.join(ATTENTION_BACKENDS)}")


def _progress_bar(total: int, start: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="training", unit="step",
                disable=not sys.stderr.isatty(), file=sys.stderr)
