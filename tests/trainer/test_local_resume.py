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

from harness.media_factory import make_clip

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
                    "validationNumberOfFrames: 25\nlearningRate: 2e-4\n"
                    f"model:\n  url: {tiny_model.as_uri()}\n")  # downloaded into the cache
    command = [CLI, "train", str(spec), "--output", "out", "--max-sequence-length", "32",
               "--checkpoint-every", "40"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    first_log = tmp_path / "first.log"  # a file, not a pipe nobody reads while it runs
    with first_log.open("w") as sink:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=sink,
                                 stderr=subprocess.STDOUT)
    out = tmp_path / "out"
    deadline = time.time() + 600
    while not _checkpointed(out):
        assert first.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # no handler runs: what it left must say enough
    first.wait()
    first_out = first_log.read_text()
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
    assert len(list((out / ".work" / "model-cache").glob("tiny-*/model_index.json"))) == 1
    assert "tiny random model" not in first_out + second.stdout

    third = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == ExitCode.SUCCESS, third.stderr
    assert third.stdout.splitlines()[0] == \
        f"out/local/door/{run.name} finished earlier: not training it again"
    assert f"LoRA: out/local/door/{run.name}/outputs/lora.safetensors" in third.stdout
    assert "billable units: 100 ($0.61), billed when it finished" in third.stdout
    assert "stage: training" not in third.stderr


def test_resume_names_a_run_folder_and_checks_it_was_this_spec(tmp_path, capsys):
    from ltx_contract.result import JobResult
    from ltx_contract.spec import parse_spec
    from ltx_trainer.cli import main

    request = {"trainingDataUrl": "s3://b/clips.zip", "numberOfSteps": 200}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(request))
    out = tmp_path / "out"
    run = out / "local" / "door" / "0123456789ab"
    run.mkdir(parents=True)
    train = ["train", str(spec), "--output", str(out), "--model", "file:///models/ltx"]

    assert main([*train, "--resume", "local/door/missing"]) == ExitCode.USAGE
    assert "--resume: there is no run" in capsys.readouterr().err
    assert main([*train, "--resume", "../../etc"]) == ExitCode.USAGE
    assert "three plain path segments" in capsys.readouterr().err

    other = parse_spec({**request, "numberOfSteps": 300, "rank": 16})
    (run / "spec.json").write_text(other.to_json())
    assert main([*train, "--resume", "local/door/0123456789ab"]) == ExitCode.INVALID_INPUT
    assert "was started with another spec (numberOfSteps, rank differ)" in \
        capsys.readouterr().err

    (run / "spec.json").write_text(parse_spec(request).to_json())
    done = JobResult(stage="train", outcome="Succeeded", reason="Succeeded",
                     steps_completed=200, billable_units=200)
    done.artifacts.lora_file = str(run / "outputs" / "lora.safetensors")
    (run / "result-train.json").write_text(done.to_json())
    for given in ("local/door/0123456789ab", str(run), run.as_uri()):
        assert main([*train, "--resume", given]) == ExitCode.SUCCESS, given
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"{run} finished earlier: not training it again"
        assert f"LoRA: {run}/outputs/lora.safetensors" in lines
        assert "billable units: 200 ($1.22), billed when it finished" in lines
