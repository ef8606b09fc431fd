"""The job runner: the local run, both stages against S3, results, progress."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import av
import pytest
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import load_file

from ltx_contract.outcomes import ExitCode
from ltx_contract.result import MAX_TERMINATION_BYTES
from ltx_trainer.cli import main

from harness.media_factory import make_clip

CLI = str(Path(sys.executable).parent / "ltx-extend")
FAST = ["--max-sequence-length", "32", "--checkpoint-every", "40", "--preview-steps", "2"]
BUCKET = "ltx-runs"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner-media")
    archive = root / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2):
            clip = make_clip(root / f"c{i}.mp4", 1.2, fps=24, size=(160, 96), tone_hz=300 + 90 * i)
            z.write(clip, clip.name)
            z.writestr(f"c{i}.txt", "a square glides")
    short = root / "short.zip"
    with zipfile.ZipFile(short, "w") as z:
        z.write(make_clip(root / "s.mp4", 0.3, fps=24), "s.mp4")
    closing = make_clip(root / "closing.mp4", 1.1, fps=24, size=(160, 96))
    return {"archive": archive, "short": short, "closing": closing}


def spec_dict(data_url: str, closing_url: str | None = None, **extra) -> dict:
    spec = {"trainingDataUrl": data_url, "numberOfSteps": 100, "numberOfFrames": 25,
            "resolution": "low", "aspectRatio": "16:9", "withAudio": True, "rank": 8,
            "validationNumberOfFrames": 25, "validationResolution": "low",
            "validationAspectRatio": "16:9", **extra}
    if closing_url:
        spec["validation"] = [{"prompt": "a square glides in", "videoUrl": closing_url}]
    return spec


def test_local_run_end_to_end(media, tiny_model, tmp_path, capsys):
    spec = tmp_path / "training.yaml"
    spec.write_text(json.dumps({
        "apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
        "metadata": {"name": "demo"},
        "spec": spec_dict(media["archive"].as_uri(), media["closing"].as_uri(),
                          debugDataset=True, numberOfSteps=120)}))
    out = tmp_path / "out"
    assert main(["train", str(spec), "--output", out.as_uri(), "--model", str(tiny_model),
                 *FAST]) == ExitCode.SUCCESS
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert printed["billable units"] == "120 ($0.73)"  # max(100, 120) units at 0.0061
    lora = Path(printed["LoRA"].removeprefix("file://"))
    assert lora.parts[-5:-3] == ("local", "demo") and lora.is_file()
    assert all(k.startswith("diffusion_model.") for k in load_file(lora))
    assert json.loads(Path(printed["config"].removeprefix("file://")).read_text())[
        "trainingType"] == "extend-suffix"
    with av.open(printed["validation reel"].removeprefix("file://")) as reel:
        assert {s.type for s in reel.streams} == {"video", "audio"}
        assert reel.streams.video[0].frames == 25
    assert Path(printed["debug dataset"].removeprefix("file://")).is_file()
    # the loss curves: chart, table and TensorBoard's event files, named in the result
    run = lora.parent.parent
    result = json.loads((run / "result-train.json").read_text())["artifacts"]
    assert result["lossChart"] == (run / "outputs" / "loss.png").as_uri() == \
        printed["loss chart"]
    assert result["lossLog"] == (run / "outputs" / "loss.csv").as_uri()
    assert result["logs"] == (run / "outputs" / "logs").as_uri()
    assert (run / "outputs" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((run / "outputs" / "loss.csv").read_text().splitlines()) == 1 + 120
    assert list((run / "outputs" / "logs").glob("events.out.tfevents.*"))


def test_local_run_failure_bills_nothing(media, tiny_model, tmp_path, capsys):
    spec = tmp_path / "short.json"
    spec.write_text(json.dumps(spec_dict(media["short"].as_uri(), numberOfFrames=89)))
    assert main(["train", str(spec), "--output", (tmp_path / "o").as_uri(), "--model",
                 str(tiny_model), *FAST]) == ExitCode.INVALID_INPUT
    err = capsys.readouterr().err
    assert "prepare failed (InvalidInput): All training videos are too short to be " \
           "trainable" in err
    assert "billable units: 0" in err


# --- the Job stages against a real S3-compatible server -------------------------------

@pytest.fixture(scope="module")
def bucket(s3_server, media):
    client = s3_server.client()
    for name in (BUCKET, "datasets"):
        if not client.bucket_exists(name):
            client.make_bucket(name)
    for key, path in (("clips.zip", media["archive"]), ("short.zip", media["short"]),
                      ("closing.mp4", media["closing"])):
        client.fput_object("datasets", key, str(path))
    return client


def job(stage: str, spec: dict, run: str, tmp: Path, s3_server, tiny_model, *extra: str,
        wait: bool = True, port: int = 0) -> subprocess.Popen | tuple[int, dict, str]:
    log = tmp / f"termination-{stage}"
    env = {**os.environ, **s3_server.env, "PYTHONUNBUFFERED": "1"}
    args = [CLI, "job", stage, "--spec-json", json.dumps(spec), "--store",
            f"s3://{BUCKET}/trainings", "--run", run, "--work", str(tmp / f"work-{stage}"),
            "--termination-log", str(log), "--model", str(tiny_model),
            "--progress-port", str(port), *FAST, *extra]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if not wait:
        return proc
    output, _ = proc.communicate(timeout=600)
    message = json.loads(log.read_text())
    assert len(log.read_bytes()) <= MAX_TERMINATION_BYTES
    return proc.returncode, message, output


def keys(client, prefix: str) -> list[str]:
    return sorted(o.object_name for o in client.list_objects(BUCKET, prefix=prefix,
                                                             recursive=True))


def test_both_stages_against_s3(bucket, s3_server, tiny_model, tmp_path):
    spec = spec_dict("s3://datasets/clips.zip", "s3://datasets/closing.mp4")
    run = "team-a/door/uid-1"
    code, message, _ = job("prepare", spec, run, tmp_path, s3_server, tiny_model)
    assert code == ExitCode.SUCCESS, message
    assert (message["outcome"], message["reason"], message["billableUnits"]) == (
        "Succeeded", "DatasetReady", 0)
    stored = keys(bucket, f"trainings/{run}/")
    assert f"trainings/{run}/dataset/manifest.json" in stored
    assert f"trainings/{run}/result-prepare.json" in stored

    code, message, _ = job("train", spec, run, tmp_path, s3_server, tiny_model)
    assert code == ExitCode.SUCCESS, message
    assert (message["outcome"], message["stepsCompleted"], message["billableUnits"]) == (
        "Succeeded", 100, 100)
    assert message["artifacts"]["loraFile"] == \
        f"s3://{BUCKET}/trainings/{run}/outputs/lora.safetensors"
    stored = keys(bucket, f"trainings/{run}/")
    for part in ("cache/index.json", "checkpoints/step-000080/state.pt",
                 "outputs/lora.safetensors", "outputs/config.json",
                 "outputs/validation_reel.mp4", "outputs/loss.png", "outputs/loss.csv",
                 "result-train.json"):
        assert f"trainings/{run}/{part}" in stored, part
    assert any(k.startswith(f"trainings/{run}/outputs/logs/events.out.tfevents.")
               for k in stored)
    outputs = f"s3://{BUCKET}/trainings/{run}/outputs"
    assert (message["artifacts"]["lossChart"], message["artifacts"]["lossLog"],
            message["artifacts"]["logs"]) == (f"{outputs}/loss.png", f"{outputs}/loss.csv",
                                              f"{outputs}/logs")
    manifest = json.loads(bucket.get_object(BUCKET, f"trainings/{run}/result-train.json").read())
    assert "X-Amz-Signature" in manifest["downloadUrls"]["lossChart"]
    assert "logs" not in manifest["downloadUrls"]  # a folder: no single link
    url = manifest["downloadUrls"]["loraFile"]
    assert url.startswith(s3_server.endpoint) and "X-Amz-Signature" in url
    with urllib.request.urlopen(url) as response:  # the presigned URL downloads
        assert response.read() == bucket.get_object(
            BUCKET, f"trainings/{run}/outputs/lora.safetensors").read()


def test_a_killed_train_pod_resumes_from_s3(bucket, s3_server, tiny_model, tmp_path):
    spec = spec_dict("s3://datasets/clips.zip")
    run = "team-a/resume/uid-2"
    assert job("prepare", spec, run, tmp_path, s3_server, tiny_model)[0] == ExitCode.SUCCESS
    proc = job("train", spec, run, tmp_path, s3_server, tiny_model, wait=False)
    deadline = time.time() + 300
    while not keys(bucket, f"trainings/{run}/checkpoints/step-000040/state.pt"):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # a preempted node: no goodbye
    proc.wait()
    code, message, output = job("train", spec, run, tmp_path / "second-pod", s3_server,
                                tiny_model)
    assert code == ExitCode.SUCCESS, output
    assert "resumed from step-" in output
    assert "encoded " not in output  # the latent cache came from the store
    assert message["stepsCompleted"] == 100 and message["billableUnits"] == 100
    # the curves go on from the checkpoint: every step once, the killed pod's first 40 kept
    table = bucket.get_object(BUCKET, f"trainings/{run}/outputs/loss.csv").read().decode()
    steps = [int(line.split(",")[0]) for line in table.splitlines()[1:]]
    assert steps == list(range(1, 101))


@pytest.mark.parametrize(("case", "code", "reason", "text"), [
    ("bad-json", ExitCode.INVALID_INPUT, "InvalidSpec", "conditioningFrames (12) must be a "
     "multiple of 8"),
    ("too-short", ExitCode.INVALID_INPUT, "InvalidInput", "All training videos are too short"),
    ("missing", ExitCode.DOWNLOAD_FAILURE, "DownloadFailed", "from S3 bucket datasets: "
     "NoSuchKey"),
    ("no-dataset", ExitCode.INTERNAL_ERROR, "InternalError", "the prepare stage must run first"),
])
def test_failures_give_their_exit_code_and_termination_message(
        bucket, s3_server, tiny_model, tmp_path, case, code, reason, text):
    spec = {
        "bad-json": spec_dict("s3://datasets/clips.zip", conditioningFrames=12),
        "too-short": spec_dict("s3://datasets/short.zip", numberOfFrames=89),
        "missing": spec_dict("s3://datasets/nope.zip"),
        "no-dataset": spec_dict("s3://datasets/clips.zip"),
    }[case]
    stage = "train" if case == "no-dataset" else "prepare"
    got, message, _ = job(stage, spec, f"team-b/{case}/uid", tmp_path, s3_server, tiny_model)
    assert (got, message["outcome"], message["reason"]) == (code, "Failed", reason)
    assert text in message["message"] and message["billableUnits"] == 0
    stored = json.loads(bucket.get_object(
        BUCKET, f"trainings/team-b/{case}/uid/result-{stage}.json").read())
    assert stored["reason"] == reason
    assert "test-secret-key" not in json.dumps(stored)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_progress_and_metrics_answer_during_a_run(bucket, s3_server, tiny_model, tmp_path):
    spec = spec_dict("s3://datasets/clips.zip", numberOfSteps=300)
    run = "team-c/progress/uid"
    assert job("prepare", spec, run, tmp_path, s3_server, tiny_model)[0] == ExitCode.SUCCESS
    port = _free_port()
    proc = job("train", spec, run, tmp_path, s3_server, tiny_model, wait=False, port=port)
    try:
        deadline, progress = time.time() + 300, {}
        while progress.get("stage") != "training" or not progress.get("step"):
            assert proc.poll() is None and time.time() < deadline, "no progress reported"
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress") as r:
                    progress = json.loads(r.read())
            except OSError:
                continue
        assert progress["totalSteps"] == 300 and progress["loss"] is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        assert families["ltx_extend_train_total_steps"].samples[0].value == 300
        assert families["ltx_extend_train_step"].samples[0].value >= 1
    finally:
        proc.kill()
        proc.wait()


def test_a_wrong_model_folder_is_refused_before_any_work(media, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_dict(media["archive"].as_uri())))
    out = tmp_path / "out"
    assert main(["train", str(spec), "--output", out.as_uri(), "--model",
                 str(tmp_path / "no-model")]) == ExitCode.INVALID_INPUT
    assert "is not a diffusers model folder (no model_index.json)" in capsys.readouterr().err
    assert not out.exists()  # nothing prepared, nothing written, nothing billed


@pytest.mark.parametrize("run", ["team/only-two", "../../x", "a/../b", "a/b/c/d", "a//b",
                                 "a/b/c d", "./b/c"])
def test_a_malformed_run_is_a_usage_error_before_anything_is_written(tmp_path, capsys, run):
    store = tmp_path / "s"
    with pytest.raises(SystemExit) as exited:
        main(["job", "prepare", "--spec-json", "{}", "--store", str(store), "--run", run,
              "--work", str(tmp_path / "w")])
    assert exited.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "usage: ltx-extend job" in err
    assert "the run must be <namespace>/<name>/<uid>, three plain path segments" in err
    assert not store.exists() and not (tmp_path / "w").exists()


def test_a_malformed_run_from_the_environment_is_a_usage_error_too(tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv("LTX_EXTEND_RUN", "../../x")
    assert main(["job", "prepare", "--spec-json", "{}", "--store", str(tmp_path / "s"),
                 "--work", str(tmp_path / "w")]) == ExitCode.USAGE
    assert "the run must be <namespace>/<name>/<uid>" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_job_without_a_base_model_fails_at_once(tmp_path, capsys):
    spec = spec_dict("s3://datasets/clips.zip")
    store, log = tmp_path / "store", tmp_path / "termination"
    assert main(["job", "train", "--spec-json", json.dumps(spec), "--store", str(store),
                 "--run", "team-d/no-model/uid", "--work", str(tmp_path / "work"),
                 "--termination-log", str(log), "--progress-port", "0"]) == \
        ExitCode.INVALID_INPUT
    result = json.loads(log.read_text())
    assert (result["outcome"], result["reason"], result["billableUnits"]) == (
        "Failed", "NoBaseModel", 0)
    for setting in ("spec.model", "model.claimName", "model.url"):
        assert setting in result["message"]
    assert not (tmp_path / "work" / "model-cache").exists()  # no tiny model was written
    assert not (tmp_path / "work" / "train").exists()  # nothing was downloaded
    assert json.loads((store / "team-d/no-model/uid/result-train.json").read_text())[
        "reason"] == "NoBaseModel"
