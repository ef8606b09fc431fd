"""Seconds per training step, peak GPU memory and model FLOPs utilization.

Runs the real training step (the extend-suffix strategy, LoRA on the transformer,
AdamW, gradient checkpointing and bf16 on GPU) on synthetic latents of the shape a
clip of --frames frames at --resolution/--aspect gives, with the given model folder
(the real LTX-2.3 or the tiny one; default: the tiny one).

    python tests/benchmarks/bench_train_step.py [--model DIR] [--frames 89]
        [--resolution medium] [--aspect 1:1] [--rank 32] [--audio] [--steps 10]
        [--peak-tflops 989]

MFU = FLOPs of one step (counted by torch.utils.flop_counter on the first step) ×
steps/s ÷ the device's dense bf16 peak (--peak-tflops; H100 SXM 989, H200 989).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--frames", type=int, default=89)
    parser.add_argument("--resolution", default="medium")
    parser.add_argument("--aspect", default="1:1")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--audio", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()

    from ltx_contract.spec import parse_spec
    from ltx_contract.suffix import SuffixWindow
    from ltx_trainer.model.loader import default_device
    from ltx_trainer.model.source import resolve_model_dir
    from ltx_trainer.training.trainer import Trainer, TrainSettings, step_generator

    device = default_device()
    model_dir = resolve_model_dir(args.model)
    spec = parse_spec({"trainingDataUrl": "s3://bench/none.zip", "rank": args.rank,
                       "numberOfFrames": args.frames, "resolution": args.resolution,
                       "aspectRatio": args.aspect, "withAudio": args.audio})
    trainer = Trainer(spec, model_dir, Path(tempfile.mkdtemp()), device,
                      TrainSettings(max_sequence_length=256))
    trainer._load()
    transformer = trainer.transformer
    width, height = spec.frame_size
    suffix = SuffixWindow(spec.number_of_frames, spec.frame_rate, spec.conditioning_frames)
    sample = {
        "video": torch.randn(transformer.config.in_channels, suffix.latent_frames,
                             height // 32, width // 32),
        "audio": torch.randn(suffix.audio_latent_frames, transformer.config.audio_in_channels),
        "text": torch.randn(64, trainer.connectors.config.caption_channels
                            * trainer.connectors.config.text_proj_in_factor
                            ).to(torch.bfloat16),  # as the text cache holds it
    }

    def step(index: int) -> None:
        trainer.backward(trainer.prepare(sample, suffix, step_generator(0, index)),
                         sample["text"])
        trainer.optimizer_step()

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(0)  # also the warm-up
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(1, args.steps + 1):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": str(model_dir), "version": trainer.profile.version,
        "frames": spec.number_of_frames,
        "size": [width, height], "video_tokens": suffix.latent_frames * (height // 32) * (
            width // 32), "rank": args.rank, "audio": args.audio,
        "trainable_params": sum(p.numel() for p in trainer.params),
        "seconds_per_step": round(seconds, 4),
        "step_tflop": round(flops / 1e12, 3),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda" else None,
        "mfu": round(flops / seconds / (args.peak_tflops * 1e12), 4)
        if device.type == "cuda" else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
