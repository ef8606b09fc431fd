"""Training samples per second at 1 and more data-parallel ranks, through the launcher.

    .venv/bin/python tests/benchmarks/bench_ranks.py [--ranks 1 2] [--model DIR] [--steps 100]

Prepares a small dataset once, encodes its cache once, then for each rank count starts
the ranks with `training.launch` (the same elastic launcher `--processes N` and the pods
use; gloo on CPU, NCCL on GPUs) and trains the spec's steps; the main rank times the
steps after the first `--warmup`. Prints JSON: samples per second per rank count and the
ratio to one rank (the global batch is the rank count, so a step of N ranks trains N
samples).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def _spec(archive: Path, steps: int):
    from ltx_contract.spec import parse_spec

    return parse_spec({"trainingDataUrl": archive.as_uri(), "numberOfSteps": steps,
                       "numberOfFrames": 25, "resolution": "low", "aspectRatio": "16:9",
                       "rank": 16})


def bench_rank(spec, model: Path, work: Path, warmup: int) -> dict | None:
    """One rank: train the spec on the shared cache; the main rank's timings."""
    from ltx_trainer.training import distributed
    from ltx_trainer.training.trainer import Trainer, TrainSettings

    world, device = distributed.init(distributed.World.from_env())
    times: list[float] = []
    settings = TrainSettings(max_sequence_length=32, checkpoint_every=10**6)
    mine = work / f"{world.size}-ranks" / f"rank-{world.rank}"  # its own checkpoints
    for part in ("dataset", "cache"):
        shutil.copytree(work / part, mine / part, dirs_exist_ok=True)
    trainer = Trainer(spec, model, mine, device, settings, world=world,
                      progress=lambda p: times.append(time.perf_counter()))
    trainer.train(mine / "dataset")
    distributed.close(world)
    if not world.is_main:
        return None
    timed = len(times) - 1 - warmup
    return {"ranks": world.size, "device": device.type,
            "samples_per_second": timed * trainer.global_batch / (times[-1] - times[warmup])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", type=Path, help="diffusers folder (default: the tiny model)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    import torch

    from ltx_trainer.dataset import FetchPolicy, PrepareSettings, prepare_dataset
    from ltx_trainer.model.tiny import write_tiny_model
    from ltx_trainer.training.launch import Ranks, launch
    from ltx_trainer.training.preprocess import encode_dataset

    from harness.media_factory import make_clip

    root = Path(tempfile.mkdtemp(prefix="bench-ranks-"))
    model = args.model or write_tiny_model(root / "tiny")
    archive = root / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(4):
            z.write(make_clip(root / f"c{i}.mp4", 1.2, fps=24, size=(160, 96),
                              tone_hz=200.0 * (i + 1)), f"c{i}.mp4")
    spec = _spec(archive, args.steps)
    work = root / "work"
    prepare_dataset(spec, work, PrepareSettings(fetch=FetchPolicy(allow_file_urls=True)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encode_dataset(work / "dataset", work / "cache", model, device, with_audio=False,
                   max_sequence_length=32)
    figures = []
    for count in args.ranks:
        returned = launch(Ranks.local(count, max_restarts=0), root / f"logs-{count}",
                          bench_rank, spec, model, work, args.warmup)
        figures.append(returned[0])
    base = figures[0]["samples_per_second"]
    for figure in figures:
        figure["ratio_to_first"] = round(figure["samples_per_second"] / base, 3)
        figure["samples_per_second"] = round(figure["samples_per_second"], 3)
    print(json.dumps({"steps": args.steps, "warmup": args.warmup, "figures": figures},
                     indent=1))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
