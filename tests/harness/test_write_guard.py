"""Every write lands under the stage's work folder (model cache included) or, for a local
run, its output folder: the trainer's own processes run with an audit hook recording
every file opened for writing and every folder made (`write_guard/sitecustomize.py`),
with HOME and XDG_CACHE_HOME where nothing can be written, not even by root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ltx_contract.outcomes import ExitCode

from harness.media_factory import make_clip

CLI = str(Path(sys.executable).parent / "ltx-extend")
GUARD = Path(__file__).parent / "write_guard"
FAST = ["--max-sequence-length", "32", "--checkpoint-every", "50", "--preview-steps", "2"]
BUCKET = "guarded"


def guarded_env(tmp_path: Path, log: Path, extra: dict[str, str] | None = None
                ) -> dict[str, str]:
    blocked = tmp_path / "not-a-folder"  # a file: no folder can be made under it
    blocked.write_text("")
    return {**os.environ, **(extra or {}), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")]),
            "WRITE_GUARD_LOG": str(log), "HOME": str(blocked / "home"),
            "XDG_CACHE_HOME": str(blocked / "cache")}


def written(log: Path) -> list[dict]:
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events, "the write guard recorded nothing: it is not installed"
    return events


def outside(events: list[dict], *allowed: Path) -> list[str]:
    # /dev/null is writable in every container (subprocesses' discarded output: importing
    # torch runs ldconfig with its stderr there)
    roots = [os.path.realpath(a) for a in allowed]
    return sorted({f"{e['event']} {e['path']}" for e in events if e["path"] != os.devnull
                   if not any(os.path.realpath(e["path"]) == r
                              or os.path.realpath(e["path"]).startswith(r + os.sep)
                              for r in roots)})


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guard-media")
    archive = root / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2):
            clip = make_clip(root / f"c{i}.mp4", 1.2, fps=24, size=(160, 96), tone_hz=330)
            z.write(clip, clip.name)
            z.writestr(f"c{i}.txt", "a square glides")
    return {"archive": archive, "closing": make_clip(root / "closing.mp4", 1.1, fps=24,
                                                     size=(160, 96))}


def spec_dict(data_url: str, closing_url: str, **extra) -> dict:
    return {"trainingDataUrl": data_url, "numberOfSteps": 100, "numberOfFrames": 25,
            "resolution": "low", "aspectRatio": "16:9", "withAudio": True, "rank": 8,
            "validationNumberOfFrames": 25, "validationResolution": "low",
            "validationAspectRatio": "16:9",
            "validation": [{"prompt": "a square glides in", "videoUrl": closing_url}], **extra}


def test_job_stages_write_only_under_their_work_folder(s3_server, clips, tiny_model,
                                                       tmp_path):
    client = s3_server.client()
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    client.fput_object(BUCKET, "data/clips.zip", str(clips["archive"]))
    client.fput_object(BUCKET, "data/closing.mp4", str(clips["closing"]))
    for path in sorted(p for p in tiny_model.rglob("*") if p.is_file()):
        client.fput_object(BUCKET, f"models/tiny/{path.relative_to(tiny_model)}", str(path))
    spec = json.dumps(spec_dict(f"s3://{BUCKET}/data/clips.zip",
                                f"s3://{BUCKET}/data/closing.mp4"))
    for stage, model in (("prepare", []), ("train", ["--model", f"s3://{BUCKET}/models/tiny"])):
        log, work = tmp_path / f"writes-{stage}.jsonl", tmp_path / f"work-{stage}"
        termination = tmp_path / f"termination-{stage}"
        proc = subprocess.run(
            [CLI, "job", stage, "--spec-json", spec, "--store", f"s3://{BUCKET}/runs",
             "--run", "team/guarded/uid-1", "--work", str(work), "--termination-log",
             str(termination), "--progress-port", "0", *model, *FAST],
            env=guarded_env(tmp_path, log, s3_server.env), capture_output=True, text=True,
            timeout=900)
        assert proc.returncode == ExitCode.SUCCESS, proc.stdout + proc.stderr
        events = written(log)
        assert outside(events, work, termination) == []
        made = {e["path"] for e in events}
        assert any(p.startswith(str(work / "tmp")) for p in made)  # temporary files there
    downloaded = list((tmp_path / "work-train" / "model-cache").glob("tiny-*/model_index.json"))
    assert len(downloaded) == 1  # the model given by URL, in the default model cache
    result = json.loads((tmp_path / "termination-train").read_text())
    assert (result["outcome"], result["billableUnits"]) == ("Succeeded", 100)


def test_a_local_run_writes_only_under_its_output_and_says_it_uses_the_tiny_model(
        clips, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_dict(clips["archive"].as_uri(), clips["closing"].as_uri(),
                                         withAudio=False, validation=[])))  # previews: above
    log, out = tmp_path / "writes-local.jsonl", tmp_path / "out"
    proc = subprocess.run([CLI, "train", str(spec), "--output", str(out), *FAST],
                          env=guarded_env(tmp_path, log), capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert proc.returncode == ExitCode.SUCCESS, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].startswith("using the tiny random model (no --model "
                                                  "and no spec.model)")
    assert outside(written(log), out) == []
    assert (out / ".work" / "model-cache" / "tiny-model" / "model_index.json").is_file()
    assert "billable units: 100" in proc.stdout
