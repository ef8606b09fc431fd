"""The GPU kit's stages (run through `run.sh`, which sets up the Python path).

    run.sh [--out DIR] [--cpu] [--smoke] [--model DIR] [--prepare DIR]

Each stage is a subprocess of the project's own commands, timed, its output in `kit.log`;
`kit.json` holds each stage's exit status and seconds, the environment, and the bench's
JSON lines (also in `bench.jsonl`). Stages:

1. `bench`: `bench_train_step.py` — on a GPU the full-depth LTX-2.3 built on the device
   (defaults, audio, high, and every speed variant of the defaults); with `--smoke` the
   one-block model (from `--model DIR`, else built) at a few latent tokens.
2. `model`: a random model written here — on a GPU LTX-2.3 at its real widths with one
   block per stack; with `--smoke` the tiny LTX-2.3 model.
3. `train`: `ltx-extend job train` on the prepared dataset (`.whl/kit`, made by
   `--prepare`, which `make device-wheels` runs): 100 steps, a validation entry (its
   reel renders on the device beside the live transformer).
4. `extend`: `ltx-extend extend` of the validation clip with the trained LoRA.

`--prepare DIR` (where PySceneDetect is, i.e. not on the GPU machine) writes that dataset:
sample clips, the spec, the closing clip, and the prepare stage's output in a store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "tests" / "benchmarks" / "bench_train_step.py"
KIT_DATA = ROOT / ".whl" / "kit"
RUN = "kit/lead-in/1"  # the run's key in the kit's store
CLI = [sys.executable, "-m", "ltx_trainer.cli"]


def kit_spec(archive: Path, closing: Path) -> dict:
    return {"trainingDataUrl": archive.as_uri(), "triggerPhrase": "LEADIN",
            "numberOfSteps": 100, "numberOfFrames": 17, "resolution": "low",
            "aspectRatio": "16:9", "withAudio": True, "rank": 16,
            "validation": [{"prompt": "LEADIN a square glides in", "videoUrl": closing.as_uri()}],
            "validationNumberOfFrames": 17, "validationResolution": "low"}


def prepare(dest: Path) -> None:
    """The dataset the GPU machine cannot prepare (no PySceneDetect there)."""
    from ltx_trainer.sample_data import write_closing_clip, write_sample_dataset

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = write_sample_dataset(dest / "source", clips=1, seconds=1.0)
    closing = write_closing_clip(dest)
    spec = dest / "spec.json"
    spec.write_text(json.dumps(kit_spec(archive.resolve(), closing.resolve())))
    subprocess.run([*CLI, "job", "prepare", "--store", str(dest / "store"), "--run", RUN,
                    "--spec-json", f"@{spec}", "--allow-file-urls", "--work",
                    str(dest / "work")], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(dest / "work", ignore_errors=True)
    shutil.rmtree(dest / "source", ignore_errors=True)  # prepared: the clips are not needed


class Kit:
    def __init__(self, out: Path):
        self.out, self.stages = out, {}
        self.log = (out / "kit.log").open("a")

    def stage(self, name: str, command: list[str], timeout: float,
              env: dict[str, str] | None = None) -> bool:
        self.log.write(f"\n== {name}: {' '.join(command)}\n")
        self.log.flush()
        print(f"kit: {name} …", flush=True)
        began = time.perf_counter()
        try:
            rc = subprocess.run(command, stdout=self.log, stderr=subprocess.STDOUT,
                                timeout=timeout, cwd=ROOT,
                                env={**os.environ, **(env or {})}).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        seconds = round(time.perf_counter() - began, 1)
        self.stages[name] = {"rc": rc, "seconds": seconds}
        print(f"kit: {name} rc={rc} in {seconds} s", flush=True)
        return rc == 0


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.cuda.is_available()}
    if env["cuda"]:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpuMemoryGiB=round(props.total_memory / 2**30, 1))
    for name in ("diffusers", "transformers", "peft", "pydantic", "av"):
        try:
            env[name] = __import__(name).__version__
        except Exception as exc:  # recorded: the stages say what breaks
            env[name] = f"missing: {exc}"
    return env


def bench_command(args: argparse.Namespace, out: Path) -> list[str]:
    command = [sys.executable, str(BENCH), "--json-out", str(out / "bench.jsonl")]
    if args.smoke:
        source = ["--model", str(args.model)] if args.model else ["--shapes", "ltx-2.3",
                                                                   "--one-block"]
        return [*command, *source, "--latent-size", "2x2x2", "--max-sequence-length", "128",
                "--steps", "1", "--warmup", "1"]
    return [*command, "--shapes", "ltx-2.3", "--case", "defaults", "audio", "high",
            "--variants", "all", "--steps", "3", "--warmup", "1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the GPU kit")
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT"))
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (run.sh hides GPUs)")
    parser.add_argument("--smoke", action="store_true", help="the one-block model, few tokens")
    parser.add_argument("--model", type=Path, help="with --smoke: a one-block model folder for "
                        "the bench instead of building one")
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="only write the dataset")
    parser.add_argument("--data", type=Path, default=KIT_DATA)
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        print(f"kit: prepared dataset in {args.prepare}")
        return 0
    if args.out is None:
        parser.error("give --out DIR (or set $OUT)")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("KIT_WORK", out / "work"))
    kit, began = Kit(out), time.perf_counter()
    data = args.data
    if not (data / "store" / RUN / "dataset").is_dir():
        try:  # here PySceneDetect is at hand; on the GPU machine the carried one is used
            data = work / "kit-data"
            prepare(data)
        except Exception as exc:  # the kit stops with the reason
            print(f"kit: no prepared dataset in {args.data} and none can be made here "
                  f"({exc}): run 'make device-wheels' first", file=sys.stderr)
            return 2
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(data / "store", store)
    model = work / "model"
    spec = data / "spec.json"
    smoke_size = ["--max-sequence-length", "64"] if args.smoke else []
    # the tiny model gains nothing from more threads, and on a busy CPU spinning ones
    # slow it down many times over
    tiny = {"OMP_NUM_THREADS": "1"} if args.smoke else None
    kit.stage("bench", bench_command(args, out), 420)
    written = kit.stage("model", [*CLI, "tiny-model", str(model), "--version", "2.3"]
                        if args.smoke else [*CLI, "tiny-model", str(model), "--shapes",
                                            "ltx-2.3"], 180, tiny)
    trained = written and kit.stage("train", [
        *CLI, "job", "train", "--store", str(store), "--run", RUN, "--spec-json", f"@{spec}",
        "--model", str(model), "--work", str(work / "train"), "--progress-port", "0",
        "--preview-steps", "2", "--checkpoint-every", "1000", *smoke_size], 300, tiny)
    lora = store / RUN / "outputs" / "lora.safetensors"
    if trained:
        shutil.copy(store / RUN / "result-train.json", out / "result-train.json")
        kit.stage("extend", [
            *CLI, "extend", "--model", str(model), "--lora", str(lora), "--clip",
            str(data / "closing.mp4"), "--prompt", "LEADIN a square glides in", "--output",
            str(out / "extend.mp4"), "--frames", "17", "--resolution", "low",
            "--aspect", "16:9", "--steps", "2", "--audio"], 180, tiny)
    bench = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()
             ] if (out / "bench.jsonl").is_file() else []
    summary = {"smoke": args.smoke, "environment": environment(), "stages": kit.stages,
               "seconds": round(time.perf_counter() - began, 1), "bench": bench}
    (out / "kit.json").write_text(json.dumps(summary, indent=1))
    ok = all(stage["rc"] == 0 for stage in kit.stages.values()) and len(kit.stages) == 4
    print(f"kit: {'all stages passed' if ok else 'FAILED'} in {summary['seconds']} s; "
          f"{out / 'kit.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
