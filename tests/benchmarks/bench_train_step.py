"""Seconds per training step, peak memory, FLOPs and MFU of the real training step, beside
what `ltx-extend plan` predicts for it.

    python tests/benchmarks/bench_train_step.py [--shapes ltx-2.3 [--one-block] | --model DIR|FILE]
        [--case defaults audio high] [--variants all|before,compiled,...]
        [--frames N --resolution R --aspect A --rank N --audio] [--steps 5] [--warmup 1]
        [--max-sequence-length 1024] [--peak-tflops T] [--json-out FILE]

`--shapes ltx-2.3` builds the release's transformer and connectors (all 48 blocks, real
widths, audio branch) with seeded random bf16 weights directly on the device — no
checkpoint, no disk, no copy through CPU memory — and feeds synthetic latents and text
features of the case's real sizes: a step's cost depends on shapes, not weights.
`--one-block` cuts every stack to one block (the CPU-sized model). `--model` takes a
diffusers folder or the official single file instead; neither: the tiny model.

Cases: `defaults` (medium 768×768, 89 frames, rank 32, video only), `audio` (the same with
audio), `high` (960×960, 121 frames).
Variants of the defaults measure each speed measure against the step without it:
`before` (all of them off: the connectors every step, peft's fp32 input casts, unfused
AdamW, PyTorch's own attention order, every block checkpointed) and one with each alone
off, and `compiled` (regional compilation on; its compile time is the first step's
excess over the median), and `low-memory` (int8 frozen block weights and the 8-bit
AdamW on CUDA; run last, as the reused transformer stays int8).

Per case: the median of `--steps` timed steps after `--warmup` (plus one step counted by
FlopCounterMode, whose first-step count also gives the connectors' FLOPs), peak allocated
and reserved memory (GPU) or the process's peak RSS (CPU), MFU against the device's
dense bf16 peak, the SDPA kernels that ran, and the plan's figures for the same step with
the error in percent ((plan − measured) / measured). One JSON line per case, then a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

GIB = 2**30
CASES = {
    "defaults": {},
    "audio": {"withAudio": True},
    "high": {"resolution": "high", "numberOfFrames": 121},
}


@dataclass(frozen=True)
class Variant:
    """How a case's step is run: the trainer's settings, and the measures switched off."""

    name: str
    connectors_every_step: bool = False
    lora_input_cast: bool = False
    fused_adamw: bool | None = None  # None: the trainer's choice (fused on CUDA)
    attention: str = "auto"
    all_checkpointed: bool = False  # else the trainer's choice (the plan's on a GPU)
    compile_backend: str | None = None
    #: int8 frozen block weights and the 8-bit AdamW (on CUDA); one way (the reused
    #: transformer stays int8), so such a case runs last
    low_memory: bool = False


AFTER = Variant("after")
VARIANTS = {
    "before": Variant("before", connectors_every_step=True, lora_input_cast=True,
                      fused_adamw=False, attention="default", all_checkpointed=True),
    "connectors-every-step": Variant("connectors-every-step", connectors_every_step=True),
    "lora-input-cast": Variant("lora-input-cast", lora_input_cast=True),
    "adamw-unfused": Variant("adamw-unfused", fused_adamw=False),
    "attention-default": Variant("attention-default", attention="default"),
    "all-checkpointed": Variant("all-checkpointed", all_checkpointed=True),
    "compiled": Variant("compiled", compile_backend="inductor"),
    "low-memory": Variant("low-memory", low_memory=True),
}


@dataclass(frozen=True)
class Case:
    name: str
    spec: Any  # TrainingSpec
    variant: Variant = AFTER
    latent_size: tuple[int, int, int] | None = None  # (frames, height, width) override

    @property
    def label(self) -> str:
        return self.name if self.variant is AFTER else f"{self.name}/{self.variant.name}"


def case_spec(name: str, **overrides: Any) -> Any:
    from ltx_contract.spec import parse_spec

    body = {"trainingDataUrl": "s3://bench/none.zip", **CASES[name]}
    return parse_spec({**body, **{k: v for k, v in overrides.items() if v is not None}})


# -- the model ---------------------------------------------------------------------------

class ReusedParts:
    """The model's components built or loaded once and handed to every case in turn; after
    a case its LoRA, checkpointing and compiled blocks are taken off again."""

    def __init__(self, parts: Any):
        self.parts, self.built, self.build_seconds = parts, {}, {}

    def __getattr__(self, name: str) -> Any:  # profile, shapes, name
        return getattr(self.parts, name)

    def load(self, name: str, device: torch.device, dtype: torch.dtype | None = None) -> Any:
        if name not in self.built:
            start = time.perf_counter()
            self.built[name] = self.parts.load(name, device, dtype)
            _sync(device)
            self.build_seconds[name] = time.perf_counter() - start
        return self.built[name]

    def reset(self) -> None:
        transformer = self.built.get("transformer")
        if transformer is None:
            return
        if getattr(transformer, "_hf_peft_config_loaded", False):
            transformer.unload_lora()
        transformer.disable_gradient_checkpointing()
        for block in transformer.transformer_blocks:
            block._compiled_call_impl = None  # what Module.compile set
        transformer.eval().requires_grad_(False)


def model_parts(args: argparse.Namespace) -> Any:
    """The transformer and connectors to measure: a release's shapes, or a model."""
    from ltx_trainer.model.loader import RandomModel, WithDtype
    from ltx_trainer.model.shapes import shapes_named
    from ltx_trainer.model.source import resolve_model

    if args.shapes:
        shapes = shapes_named(args.shapes)
        return RandomModel(shapes.cut_depth() if args.one_block else shapes)
    # bf16 weights on any device, as on a GPU (a CPU would load them in fp32)
    text_encoder = args.text_encoder
    if text_encoder is None and args.model is not None and args.model.is_file():
        from ltx_trainer.model.single_file import GEMMA_DIR

        text_encoder = args.model.parent / GEMMA_DIR
    model = resolve_model(args.model, text_encoder=text_encoder)
    return WithDtype(model, torch.bfloat16)


# -- one case ----------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_gib() -> float:
    """The process's resident-memory high-water mark (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / GIB
    return 0.0


def synthetic_sample(case: Case, trainer: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Latents and text features of the case's sizes, as the caches hold them (CPU; text
    in bf16, 64 real tokens), and the clip's suffix window."""
    from ltx_contract.suffix import SuffixWindow

    spec, config = case.spec, trainer.transformer.config
    suffix = SuffixWindow(spec.number_of_frames, spec.frame_rate, spec.conditioning_frames)
    width, height = spec.frame_size
    spatial = config.vae_scale_factors[1]
    frames, rows, cols = case.latent_size or (suffix.latent_frames, height // spatial,
                                              width // spatial)
    connectors = trainer.connectors.config
    sample = {
        "video": torch.randn(config.in_channels, frames, rows, cols),
        "audio": torch.randn(suffix.audio_latent_frames, config.audio_in_channels),
        "text": torch.randn(64, connectors.caption_channels * connectors.text_proj_in_factor
                            ).to(torch.bfloat16),
    }
    return sample, suffix


def step_shape(case: Case, trainer: Any, sample: dict[str, torch.Tensor]) -> Any:
    """The plan's description of this step."""
    from ltx_trainer.training.measure import StepShape

    _, frames, rows, cols = sample["video"].shape
    spec = case.spec
    return StepShape(case.label, frames, rows, cols, sample["audio"].shape[0],
                     trainer.settings.max_sequence_length, float(spec.frame_rate),
                     spec.with_audio, spec.rank)


def gpu_key(device: torch.device) -> str | None:
    """The plan's GPU entry for this device (by name), if it has one."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    return next((key for key in ("h200", "h100", "a100", "l40s") if key in name), None)


def run_case(case: Case, parts: ReusedParts, device: torch.device, *, steps: int,
             warmup: int, max_sequence_length: int, peak_tflops: float | None) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from ltx_trainer.model.adapter import set_input_casting
    from ltx_trainer.model.forward import AttentionKernels
    from ltx_trainer.training.speed import make_optimizer
    from ltx_trainer.training.trainer import Trainer, TrainSettings, step_generator

    variant = case.variant
    depth = parts.profile.num_layers
    settings = TrainSettings(
        max_sequence_length=max_sequence_length, attention_backend=variant.attention,
        compile_backend=variant.compile_backend, low_memory=variant.low_memory,
        checkpointed_blocks=depth if variant.all_checkpointed else None)
    trainer = Trainer(case.spec, parts, Path(tempfile.mkdtemp(prefix="bench-step-")), device,
                      settings)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    trainer._load()
    _sync(device)
    load_seconds = time.perf_counter() - start
    if variant.lora_input_cast:
        set_input_casting(trainer.transformer, True)
    if variant.fused_adamw is not None:
        from diffusers.optimization import get_scheduler

        trainer.optimizer = make_optimizer(trainer.params, case.spec.learning_rate, 0.0,
                                           device, fused=variant.fused_adamw)
        trainer.scheduler = get_scheduler("constant_with_warmup", trainer.optimizer,
                                          num_warmup_steps=0)
    weights = torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None
    sample, suffix = synthetic_sample(case, trainer)

    def step(index: int) -> torch.Tensor:
        inputs = trainer.prepare(sample, suffix, step_generator(0, index))
        text = (sample["text"] if variant.connectors_every_step
                else trainer.caption_context("bench", sample["text"]))
        losses, _ = trainer.backward(inputs, text)
        trainer.optimizer_step()
        return losses["total"]

    def timed(index: int) -> tuple[float, torch.Tensor]:
        _sync(device)
        began = time.perf_counter()
        loss = step(index)
        _sync(device)
        return time.perf_counter() - began, loss

    first_seconds, first_loss = timed(0)
    for index in range(1, warmup):
        timed(index)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    flops = first_flops = None
    kernels = AttentionKernels()
    if variant.compile_backend is None:  # a compiled step runs no dispatched ops to count
        with FlopCounterMode(display=False) as counter, kernels:
            step(warmup)
        flops = counter.get_total_flops()
        if not variant.connectors_every_step:
            trainer._captions.clear()  # the first step of a caption, connectors included
            with FlopCounterMode(display=False) as counter:
                step(warmup)
            first_flops = counter.get_total_flops()
    seconds = [timed(warmup + 1 + i)[0] for i in range(steps)]
    median = statistics.median(seconds)
    result: dict[str, Any] = {
        "case": case.label, "model": parts.name, "depth": depth,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "frames": case.spec.number_of_frames, "size": list(case.spec.frame_size),
        "audio": case.spec.with_audio, "rank": case.spec.rank,
        "latents": list(sample["video"].shape[1:]), "textTokens": max_sequence_length,
        "variant": asdict(variant), "checkpointedBlocks": len(trainer.checkpointed),
        "trainableParams": sum(p.numel() for p in trainer.params),
        "buildSeconds": round(sum(parts.build_seconds.values()), 2),
        "loadSeconds": round(load_seconds, 2), "firstStepSeconds": round(first_seconds, 3),
        "stepSeconds": [round(s, 3) for s in seconds], "secondsPerStep": round(median, 4),
        "firstLoss": round(first_loss.item(), 5),
        "flopsPerStep": flops, "connectorFlops": None if first_flops is None
        else first_flops - flops,
        "attentionKernels": sorted({k for k, _, _ in kernels.calls}),
        "attentionCalls": {f"{k} {q}×{kv}": n for (k, q, kv), n in sorted(kernels.calls.items())},
    }
    if variant.compile_backend is not None:
        result["compileSeconds"] = round(first_seconds - median, 2)
    if flops is not None and peak_tflops:
        result["tflopsPerSecond"] = round(flops / median / 1e12, 2)
        result["mfu"] = round(flops / median / (peak_tflops * 1e12), 4)
    if device.type == "cuda":
        result.update(weightsGiB=round(weights, 3),
                      peakAllocatedGiB=round(torch.cuda.max_memory_allocated(device) / GIB, 3),
                      peakReservedGiB=round(torch.cuda.max_memory_reserved(device) / GIB, 3))
    else:
        result["peakRssGiB"] = round(peak_rss_gib(), 3)
    result["plan"] = plan_beside(result, case, trainer, sample, device, peak_tflops)
    trainer.release()
    parts.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def plan_beside(result: dict[str, Any], case: Case, trainer: Any,
                sample: dict[str, torch.Tensor], device: torch.device,
                peak_tflops: float | None) -> dict[str, Any]:
    """The plan's figures for the same step (same model, tokens, rank and checkpointed
    blocks) and their error against the measured ones, in percent."""
    from ltx_trainer.training.speed import device_memory_gib, step_plan

    key = gpu_key(device) or "h100"
    plan = step_plan(trainer.model.shapes, step_shape(case, trainer, sample),
                     device_memory_gib(device) or 80.0, key)
    connector_flops = plan.connector_flops
    blocks = result["checkpointedBlocks"]
    flops = plan.flops(blocks) + (connector_flops if case.variant.connectors_every_step else 0)
    peak = peak_tflops * 1e12 if peak_tflops else plan.gpu.bf16_flops
    low_memory = case.variant.low_memory
    figures = {"checkpointedBlocks": plan.blocks_to_checkpoint(low_memory),
               "flopsPerStep": flops, "connectorFlops": connector_flops,
               "peakGiB": round(plan.peak(blocks, low_memory) / GIB, 3),
               "secondsPerStep": round(flops / (plan.utilisation * peak), 4),
               "utilisation": plan.utilisation}
    measured = {"flopsPerStep": result.get("flopsPerStep"),
                "connectorFlops": result.get("connectorFlops"),
                "peakGiB": result.get("peakAllocatedGiB")}
    if device.type == "cuda":
        measured["secondsPerStep"] = result["secondsPerStep"]
    figures["errorPercent"] = {key: round(100 * (figures[key] - value) / value, 1)
                               for key, value in measured.items() if value}
    return figures


# -- output ------------------------------------------------------------------------------

def _cell(value: Any, fmt: str = "{}") -> str:
    return "—" if value is None else fmt.format(value)


def table(results: list[dict[str, Any]]) -> str:
    """One row per case: measured beside planned."""
    head = ["case", "s/step", "plan s (err)", "TFLOP/step", "plan (err)", "MFU",
            "peak alloc / reserved GiB", "plan GiB (err)", "ckpt", "attention"]
    rows = [head]
    for r in results:
        plan, err = r["plan"], r["plan"]["errorPercent"]
        memory = (f"{r['peakAllocatedGiB']:.1f} / {r['peakReservedGiB']:.1f}"
                  if "peakAllocatedGiB" in r else f"RSS {r['peakRssGiB']:.1f}")
        rows.append([
            r["case"], f"{r['secondsPerStep']:.3f}",
            f"{plan['secondsPerStep']:.3f} ({_cell(err.get('secondsPerStep'), '{:+.0f}%')})",
            _cell(r["flopsPerStep"] and r["flopsPerStep"] / 1e12, "{:,.2f}"),
            f"{plan['flopsPerStep'] / 1e12:,.2f} ({_cell(err.get('flopsPerStep'), '{:+.1f}%')})",
            _cell(r.get("mfu"), "{:.1%}"), memory,
            f"{plan['peakGiB']:.1f} ({_cell(err.get('peakGiB'), '{:+.0f}%')})",
            f"{r['checkpointedBlocks']}/{r['depth']}", ", ".join(r["attentionKernels"]) or "—",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def cases_from(args: argparse.Namespace) -> list[Case]:
    overrides = {"numberOfFrames": args.frames, "resolution": args.resolution,
                 "aspectRatio": args.aspect, "rank": args.rank,
                 "withAudio": True if args.audio else None}
    latent = tuple(int(n) for n in args.latent_size.split("x")) if args.latent_size else None
    cases = [Case(name, case_spec(name, **overrides), latent_size=latent) for name in args.case]
    names = list(VARIANTS) if args.variants == "all" else [
        v for v in (args.variants or "").split(",") if v]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {', '.join(unknown)}: choose from "
                         f"{', '.join(VARIANTS)} or all")
    base = cases[0]
    for name in names:
        variant = VARIANTS[name]
        if name == "compiled" and args.compile_backend:
            variant = replace(variant, compile_backend=args.compile_backend)
        cases.append(replace(base, variant=variant))
    return sorted(cases, key=lambda case: case.variant.low_memory)  # stable: the rest first


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--shapes", help="a release (ltx-2.3, ltx-2.0): random weights, no "
                        "checkpoint")
    source.add_argument("--model", type=Path, help="a diffusers folder or a single file")
    p.add_argument("--text-encoder", type=Path,
                   help="with --model FILE: its Gemma-3 folder (default: gemma-3 beside it)")
    p.add_argument("--one-block", action="store_true", help="with --shapes: one block per stack")
    p.add_argument("--case", nargs="+", choices=sorted(CASES), default=["defaults"])
    p.add_argument("--variants", help="comma-separated variants of the first case, or all")
    p.add_argument("--frames", type=int)
    p.add_argument("--resolution")
    p.add_argument("--aspect")
    p.add_argument("--rank", type=int)
    p.add_argument("--audio", action="store_true")
    p.add_argument("--latent-size", help="FxHxW latent grid instead of the spec's (smoke runs)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-sequence-length", type=int, default=1024)
    p.add_argument("--compile-backend", help="the compiled variant's backend (default inductor)")
    p.add_argument("--peak-tflops", type=float,
                   help="dense bf16 peak for MFU (default: the plan's figure for this GPU)")
    p.add_argument("--json-out", type=Path, help="append the JSON lines to this file too")
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parser().parse_args(argv)
    from ltx_trainer.model.loader import default_device
    from ltx_trainer.training.memory import GPUS

    device = default_device()
    parts = ReusedParts(model_parts(args))
    peak = args.peak_tflops
    if peak is None and (key := gpu_key(device)) is not None:
        peak = GPUS[key].bf16_flops / 1e12
    results = []
    for case in cases_from(args):
        try:
            result = run_case(case, parts, device, steps=args.steps, warmup=args.warmup,
                              max_sequence_length=args.max_sequence_length, peak_tflops=peak)
        except torch.cuda.OutOfMemoryError as exc:  # recorded; the other cases still run
            result = {"case": case.label, "error": f"out of memory: {exc}".splitlines()[0]}
            parts.reset()
            gc.collect()
            torch.cuda.empty_cache()
        line = json.dumps(result)
        print(line, flush=True)
        if args.json_out is not None:
            with args.json_out.open("a") as out:
                out.write(line + "\n")
        results.append(result)
    print(table([r for r in results if "error" not in r]), file=sys.stderr)
    for failed in (r for r in results if "error" in r):
        print(f"{failed['case']}: {failed['error']}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
