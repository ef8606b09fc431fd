"""The training loop: LoRA on the LTX-2 transformer with the extend-suffix strategy.

Deterministic: every step draws its sample, sigma and noise from a generator seeded
with (seed, step), so a run resumed from a checkpoint takes exactly the steps an
uninterrupted run would and ends with the same LoRA.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from ltx_contract.spec import TrainingSpec
from ltx_contract.suffix import SuffixWindow

from .. import __version__
from .encode import encode_dataset, load_sample
from .strategy import StepInputs, masked_mse, prepare_step

log = logging.getLogger(__name__)

TRAINING_TYPE = "extend-suffix"
LORA_PREFIX = "diffusion_model."
CONFIG_METADATA_KEY = "ltx_extend_config"
#: Attention projections of the video, audio and cross-modal attentions.
LORA_TARGETS = (r"transformer_blocks\.\d+\.(attn1|attn2|audio_attn1|audio_attn2|"
                r"audio_to_video_attn|video_to_audio_attn)\.(to_q|to_k|to_v|to_out\.0)")


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 42
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_sequence_length: int = 1024
    log_every: int = 25
    gradient_checkpointing: bool | None = None  # None: on GPU only
    preview_every: int = 0  # 0: previews only at the end
    preview_steps: int = 30


@dataclass
class Progress:
    step: int
    total: int
    loss: float
    steps_per_second: float
    eta_seconds: float


@dataclass
class TrainResult:
    lora_file: Path
    config_file: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    video: Path | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass
class TrainerHooks:
    """Called as the run goes, so a job can mirror its state to the artifact store."""

    cache_ready: Callable[[Path], None] | None = None
    checkpoint_saved: Callable[[Path], None] | None = None


class Interrupted(Exception):
    """Raised when a run is told to stop after a number of steps (tests, preemption drills)."""


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _sample_order(seed: int, epoch: int, count: int) -> list[int]:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def add_lora(transformer: Any, rank: int) -> None:
    from peft import LoraConfig

    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                                       target_modules=LORA_TARGETS))


def lora_state_dict(transformer: Any) -> dict[str, torch.Tensor]:
    """The LoRA weights under their original LTX-2 names (`diffusion_model.` prefix),
    which diffusers' `load_lora_weights` and ComfyUI both load."""
    from peft import get_peft_model_state_dict

    return {f"{LORA_PREFIX}{k}": v.detach().to(torch.bfloat16).contiguous().cpu()
            for k, v in get_peft_model_state_dict(transformer).items()}


def _pad_left(embeds: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    embeds = embeds[-length:]
    padded = torch.zeros(1, length, embeds.shape[-1])
    padded[0, length - embeds.shape[0]:] = embeds
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[0, length - embeds.shape[0]:] = 1
    return padded, mask


class Checkpoints:
    """Checkpoints in a folder: `step-000250/{lora.safetensors,state.pt}`, written whole
    or not at all, the newest `keep` kept."""

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = root, keep

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step-*") if (p / "state.pt").is_file())
        return done[-1] if done else None

    def save(self, step: int, state: dict[str, Any], lora: dict[str, torch.Tensor]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:06d}"
        partial = self.root / f".partial-{step:06d}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        save_file(lora, partial / "lora.safetensors")
        torch.save(state, partial / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in sorted(p for p in self.root.glob("step-*"))[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    def __init__(self, spec: TrainingSpec, model_dir: Path, work_dir: Path,
                 device: torch.device, settings: TrainSettings | None = None,
                 progress: ProgressCallback | None = None, hooks: TrainerHooks | None = None):
        self.spec, self.model_dir, self.work_dir = spec, model_dir, work_dir
        self.device, self.settings = device, settings or TrainSettings()
        self.progress = progress
        self.hooks = hooks or TrainerHooks()
        self.checkpoints = Checkpoints(work_dir / "checkpoints", self.settings.keep_checkpoints)

    # -- model ---------------------------------------------------------------------------
    def _load(self) -> None:
        from diffusers import LTX2Pipeline

        from ..model.loader import load_component

        self.transformer = load_component(self.model_dir, "transformer", self.device)
        self.connectors = load_component(self.model_dir, "connectors", self.device)
        torch.manual_seed(self.settings.seed)  # LoRA A matrices start from the seed
        add_lora(self.transformer, self.spec.rank)
        # LoRA weights train in fp32 even when the base runs in bf16
        for param in self.transformer.parameters():
            if param.requires_grad:
                param.data = param.data.float()
        gc_on = self.settings.gradient_checkpointing
        if gc_on or (gc_on is None and self.device.type == "cuda"):
            self.transformer.enable_gradient_checkpointing()
        self.transformer.train()
        self.pack = LTX2Pipeline._pack_latents
        self.params = [p for p in self.transformer.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.spec.learning_rate,
                                           weight_decay=self.settings.weight_decay)
        warmup = self.settings.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def _forward(self, inputs: StepInputs, text: torch.Tensor, fps: float
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device, dtype = self.device, self.transformer.dtype
        frames, height, width = inputs.latent_shape
        embeds, mask = _pad_left(text, self.settings.max_sequence_length)
        with torch.no_grad():
            video_text, audio_text, text_mask = self.connectors(
                embeds.to(device, self.connectors.dtype), mask.to(device), padding_side="left")
        audio = inputs.audio
        if audio is None:
            audio = torch.randn(1, inputs.audio_frames, self.transformer.config.audio_in_channels,
                                generator=_step_generator(self.settings.seed, -1))
        rope = self.transformer.rope
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        with autocast:
            video_pred, audio_pred = self.transformer(
                hidden_states=inputs.video.to(device, dtype),
                audio_hidden_states=audio.to(device, dtype),
                encoder_hidden_states=video_text, audio_encoder_hidden_states=audio_text,
                timestep=(inputs.video_timestep * 1000).to(device),
                audio_timestep=(inputs.audio_timestep * 1000).to(device),
                sigma=torch.tensor([inputs.sigma * 1000], device=device),
                encoder_attention_mask=text_mask, audio_encoder_attention_mask=text_mask,
                num_frames=frames, height=height, width=width, fps=fps,
                audio_num_frames=inputs.audio_frames,
                video_coords=rope.prepare_video_coords(1, frames, height, width, device, fps=fps),
                audio_coords=self.transformer.audio_rope.prepare_audio_coords(
                    1, inputs.audio_frames, device),
                isolate_modalities=not self.spec.with_audio, use_cross_timestep=False,
                return_dict=False,
            )
        return video_pred, audio_pred if self.spec.with_audio else None

    def _encode(self, dataset_dir: Path) -> dict[str, Any]:
        """The latent cache's index, encoding first if the cache is not there yet."""
        return encode_dataset(dataset_dir, self.work_dir / "cache", self.model_dir, self.device,
                              with_audio=self.spec.with_audio,
                              max_sequence_length=self.settings.max_sequence_length,
                              negative_prompt=self.spec.validation_negative_prompt)

    @torch.no_grad()
    def evaluate(self, dataset_dir: Path, draws: int = 8) -> float:
        """Mean loss over every sample at `draws` fixed (sigma, noise) draws: a steady
        yardstick, unlike the per-step losses whose sigma changes each step."""
        index = self._encode(dataset_dir)
        if not hasattr(self, "transformer"):
            self._load()
            self._resume()
        total = 0.0
        for meta in index["samples"]:
            cached = load_sample(self.work_dir / "cache", meta)
            suffix = SuffixWindow(meta["frames"], meta["frameRate"], self.spec.conditioning_frames)
            for draw in range(draws):
                inputs = prepare_step(cached, suffix, with_audio=self.spec.with_audio,
                                      generator=_step_generator(10_000 + draw, 0), pack=self.pack)
                total += self.loss(inputs, cached["text"], float(meta["frameRate"]))["total"].item()
        return total / (draws * len(index["samples"]))

    def loss(self, inputs: StepInputs, text: torch.Tensor, fps: float) -> dict[str, torch.Tensor]:
        video_pred, audio_pred = self._forward(inputs, text, fps)
        losses = {"video": masked_mse(video_pred, inputs.video_target.to(self.device),
                                      inputs.video_loss_mask.to(self.device))}
        if audio_pred is not None:
            losses["audio"] = masked_mse(audio_pred, inputs.audio_target.to(self.device),
                                         inputs.audio_loss_mask.to(self.device))
        losses["total"] = sum(losses.values())
        return losses

    # -- state ---------------------------------------------------------------------------
    def _resume(self) -> tuple[int, list[float]]:
        latest = self.checkpoints.latest()
        if latest is None:
            return 0, []
        from peft import set_peft_model_state_dict

        state = torch.load(latest / "state.pt", weights_only=False)
        set_peft_model_state_dict(self.transformer, state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        log.info("resumed from %s (step %d)", latest.name, state["step"])
        return state["step"], state["losses"]

    def _checkpoint(self, step: int, losses: list[float]) -> None:
        from peft import get_peft_model_state_dict

        lora = {k: v.detach().cpu().clone() for k, v in
                get_peft_model_state_dict(self.transformer).items()}
        state = {"step": step, "lora": lora, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": _rng_state(),
                 "losses": losses}
        path = self.checkpoints.save(step, state, lora_state_dict(self.transformer))
        log.info("checkpoint %s", path.name)
        if self.hooks.checkpoint_saved is not None:
            self.hooks.checkpoint_saved(path)

    # -- the loop ------------------------------------------------------------------------
    def train(self, dataset_dir: Path, stop_after: int | None = None) -> TrainResult:
        spec, settings = self.spec, self.settings
        index = self._encode(dataset_dir)
        if self.hooks.cache_ready is not None:
            self.hooks.cache_ready(self.work_dir / "cache")
        samples = index["samples"]
        self._load()
        start, losses = self._resume()
        total = spec.number_of_steps
        bar = _progress_bar(total, start)
        began, done_here = time.perf_counter(), 0
        for step in range(start, total):
            generator = _step_generator(settings.seed, step)
            epoch, position = divmod(step, len(samples))
            meta = samples[_sample_order(settings.seed, epoch, len(samples))[position]]
            cached = load_sample(self.work_dir / "cache", meta)
            suffix = SuffixWindow(meta["frames"], meta["frameRate"], spec.conditioning_frames)
            inputs = prepare_step(cached, suffix, with_audio=spec.with_audio, generator=generator,
                                  pack=self.pack)
            result = self.loss(inputs, cached["text"], float(meta["frameRate"]))
            self.optimizer.zero_grad(set_to_none=True)
            result["total"].backward()
            torch.nn.utils.clip_grad_norm_(self.params, settings.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            losses.append(round(result["total"].item(), 6))
            done_here += 1
            rate = done_here / max(time.perf_counter() - began, 1e-9)
            self._report(bar, step + 1, total, losses[-1], rate)
            if (step + 1) % settings.checkpoint_every == 0 or step + 1 == total:
                self._checkpoint(step + 1, losses)
            if settings.preview_every and (step + 1) % settings.preview_every == 0 \
                    and step + 1 < total:
                self.render_previews(dataset_dir, self.work_dir / "previews"
                                     / f"step-{step + 1:06d}.mp4")
            if stop_after is not None and step + 1 >= stop_after and step + 1 < total:
                bar.close()
                raise Interrupted(f"stopped after step {step + 1}")
        bar.close()
        result = self._write_outputs(total, losses)
        result.video = self.render_previews(dataset_dir,
                                            self.work_dir / "outputs" / "validation_reel.mp4")
        return result

    def render_previews(self, dataset_dir: Path, dest: Path) -> Path | None:
        """The validation reel with the LoRA as it is now (None without validation)."""
        from ..preview.run import load_preview_models, render_reel

        if not self.spec.validation:
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        models = load_preview_models(self.model_dir, self.transformer, self.connectors,
                                     self.device, self.spec.with_audio)
        path = render_reel(self.spec, dataset_dir, self.work_dir / "cache", models, dest,
                           steps=self.settings.preview_steps, seed=self.settings.seed,
                           max_sequence_length=self.settings.max_sequence_length)
        log.info("validation reel %s", path)
        return path

    def _report(self, bar: Any, step: int, total: int, loss: float, rate: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if bar.disable and (step % self.settings.log_every == 0 or step == total):
            log.info("step %d/%d loss %.4f %.2f steps/s", step, total, loss, rate)
        if self.progress is not None:
            self.progress(Progress(step, total, loss, rate, (total - step) / max(rate, 1e-9)))

    def _write_outputs(self, steps: int, losses: list[float]) -> TrainResult:
        spec = self.spec
        out = self.work_dir / "outputs"
        out.mkdir(parents=True, exist_ok=True)
        config = training_config(spec, self.model_dir, self.settings)
        # flat entries for tools that list metadata, and the whole config as one JSON entry
        metadata = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in config.items()}
        metadata[CONFIG_METADATA_KEY] = json.dumps(config)
        lora_file = out / "lora.safetensors"
        save_file(lora_state_dict(self.transformer), lora_file, metadata=metadata)
        config_file = out / "config.json"
        config_file.write_text(json.dumps(config, indent=2))
        return TrainResult(lora_file, config_file, steps, losses)


def training_config(spec: TrainingSpec, model_dir: Path, settings: TrainSettings
                    ) -> dict[str, Any]:
    """What inference needs to match the training."""
    width, height = spec.frame_size
    return {
        "trainingType": TRAINING_TYPE,
        "triggerPhrase": spec.trigger_phrase,
        "conditioningFrames": spec.conditioning_frames,
        "suffixLatentFrames": spec.suffix_latent_frames,
        "numberOfFrames": spec.number_of_frames,
        "frameRate": spec.frame_rate,
        "resolution": spec.resolution,
        "aspectRatio": spec.aspect_ratio,
        "width": width,
        "height": height,
        "withAudio": spec.with_audio,
        "rank": spec.rank,
        "alpha": spec.rank,
        "steps": spec.number_of_steps,
        "learningRate": spec.learning_rate,
        "loraKeyPrefix": LORA_PREFIX,
        "baseModel": model_dir.name,
        "maxSequenceLength": settings.max_sequence_length,
        "seed": settings.seed,
        "trainer": f"ltx-extend {__version__}",
    }


def _progress_bar(total: int, start: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="training", unit="step",
                disable=not sys.stderr.isatty(), file=sys.stderr)
