"""`ltx-extend train` killed after a checkpoint and run again: the same command continues
the same run folder from its checkpoint, and a finished run is not trained again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from ltx_contract.outcomes import ExitCode

from media_factory import make_clip

CLI = str(Path(sys.executable).parent / "ltx-extend")


def _checkpointed(out: Path) -> bool:
    """The run's result records its first checkpoint (it is rewritten at each)."""
    for result in out.glob("local/door/*/result-train.json"):
        try:
            return json.loads(result.read_text())["stepsCompleted"] >= 40
        except (ValueError, KeyError):
            return False
    return False


def test_a_killed_local_run_continues_when_the_same_command_runs_again(tiny_model, tmp_path):
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2):
            z.write(make_clip(tmp_path / f"c{i}.mp4", 1.2, fps=24, size=(160, 96)), f"c{i}.mp4")
    spec = tmp_path / "door.yaml"
    spec.write_text(f"trainingDataUrl: {archive.as_uri()}\nnumberOfSteps: 100\n"
                    "numberOfFrames: 25\nresolution: low\naspectRatio: '16:9'\nrank: 8\n"
                    "validationNumberOfFrames: 25\nlearningRate: 2e-4\n")
    command = [CLI, "train", str(spec), "--output", "out", "--model", str(tiny_model),
               "--max-sequence-length", "32", "--checkpoint-every", "40"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    out = tmp_path / "out"
    deadline = time.time() + 600
    while not _checkpointed(out):
        assert first.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # no handler runs: what it left must say enough
    first.communicate()
    [run] = list((out / "local" / "door").iterdir())
    died = json.loads((run / "result-train.json").read_text())
    assert (died["outcome"], died["reason"], died["billableUnits"]) == (
        "Failed", "Interrupted", 0)
    assert died["stepsCompleted"] >= 40
    assert "run the same command again to resume from step" in died["message"]
    assert json.loads((run / "result-prepare.json").read_text())["outcome"] == "Succeeded"

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == ExitCode.SUCCESS, second.stderr
    assert [p.name for p in (out / "local" / "door").iterdir()] == [run.name]  # same folder
    assert "the prepare stage succeeded in an earlier attempt; not run again" in second.stderr
    assert "resumed from step-0000" in second.stderr
    printed = dict(line.split(": ", 1) for line in second.stdout.splitlines())
    assert printed["run"] == f"out/local/door/{run.name}"  # the form --output was given in
    assert printed["LoRA"] == f"out/local/door/{run.name}/outputs/lora.safetensors"
    assert printed["billable units"] == "100 ($0.61)"
    finished = json.loads((run / "result-train.json").read_text())
    assert (finished["outcome"], finished["stepsCompleted"]) == ("Succeeded", 100)
    assert not (out / ".work" / "runs" / f"door-{run.name}").exists()  # scratch cleaned up

    third = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == ExitCode.SUCCESS, third.stderr
    assert third.stdout.splitlines()[0] == \
        f"out/local/door/{run.name} finished earlier: not training it again"
    assert f"LoRA: out/local/door/{run.name}/outputs/lora.safetensors" in third.stdout
    assert "billable units: 100 ($0.61), billed when it finished" in third.stdout
    assert "stage: training" not in third.stderr
