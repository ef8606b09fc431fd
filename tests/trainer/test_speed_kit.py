"""The GPU kit runs end to end before it meets a GPU: `run.sh --cpu --smoke` is the same
command, stages and outputs as on the GPU machine, at the one-block real-width model (the
bench) and the tiny model (training with a validation entry, then `extend`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av

RUN_SH = Path(__file__).parents[1] / "benchmarks" / "device" / "run.sh"


def test_the_gpu_kit_smoke_run_passes_every_stage_and_writes_its_json(real_shape_models,
                                                                      tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "KIT_WORK": str(tmp_path / "work")}
    done = subprocess.run([str(RUN_SH), "--cpu", "--smoke", "--out", str(out), "--model",
                           str(real_shape_models.diffusers), "--data", str(tmp_path / "none")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr + (out / "kit.log").read_text()
    kit = json.loads((out / "kit.json").read_text())
    assert list(kit["stages"]) == ["bench", "model", "train", "extend"]
    assert not kit["environment"]["cuda"]
    bench = kit["bench"][0]
    assert bench["depth"] == 1 and bench["case"] == "defaults"
    assert bench["flopsPerStep"] > 0 and bench["connectorFlops"] > 0
    assert abs(bench["plan"]["errorPercent"]["flopsPerStep"]) < 10
    result = json.loads((out / "result-train.json").read_text())
    assert result["outcome"] == "Succeeded" and result["stepsCompleted"] == 100
    assert result["artifacts"]["video"]  # the validation reel
    with av.open(str(out / "extend.mp4")) as extended:
        assert extended.streams.video[0].frames > 0 and extended.streams.audio
