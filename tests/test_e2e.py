"""End to end on one machine: the API server (kmock), the operator running for real,
the trainer's Jobs run as local processes by the kubelet-playing harness, the tiny
model as the mounted model volume, and an S3-compatible server on loopback as the
artifact store. Each scenario checks what a user sees: status, conditions, Events,
billing, and artifacts that download and load."""

from __future__ import annotations

import base64
import json
import socket
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import pytest
import pytest_asyncio

from ltx_operator.settings import OperatorSettings
from ltx_trainer.dataset.prepare import TOO_SHORT

from kubelet import Kubelet
from media_factory import make_clip
from operator_cluster import NAMESPACE, SECRETS, Cluster

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]
IMAGE = "ltx-extend/trainer:e2e"
STORE_SECRET = "ltx-extend-store"
# Small checkpoints and previews, so a run takes seconds on a CPU (an operator setting).
TRAINER_ARGS = ["--max-sequence-length", "32", "--checkpoint-every", "40",
                "--preview-steps", "2"]
DEADLINE = 400.0  # seconds a scenario may take on a 2-core machine


@pytest.fixture(scope="module")
def e2e_media(s3_server, tmp_path_factory, tiny_model: Path) -> dict[str, str]:
    """The datasets and closing clips, uploaded to the `datasets` bucket, and the tiny
    model to `models/tiny` (a base model given by URL)."""
    root = tmp_path_factory.mktemp("e2e-media")
    client = s3_server.client()
    for bucket in ("datasets", "runs", "models"):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    for file in tiny_model.rglob("*"):
        if file.is_file():
            client.fput_object("models", f"tiny/{file.relative_to(tiny_model)}", str(file))

    def archive(name: str, seconds: float, audio: bool) -> None:
        path = root / name
        with zipfile.ZipFile(path, "w") as z:
            for i in range(2):
                clip = make_clip(root / f"{path.stem}-{i}.mp4", seconds, fps=24, size=(160, 96),
                                 audio=audio, tone_hz=300 + 90 * i, cuts=())
                z.write(clip, clip.name)
                z.writestr(f"{clip.stem}.txt", "a square glides across")
        client.fput_object("datasets", name, str(path))

    archive("clips.zip", 1.2, audio=True)
    archive("short.zip", 0.3, audio=True)
    archive("silent.zip", 1.2, audio=False)
    for i in range(2):
        clip = make_clip(root / f"closing-{i}.mp4", 1.1, fps=24, size=(160, 96),
                         tone_hz=500 + 100 * i)
        client.fput_object("datasets", clip.name, str(clip))
    return {"bucket": "runs"}


def spec(data: str, closing: int = 1, with_audio: bool = True, **extra: Any) -> dict[str, Any]:
    return {"trainingDataUrl": f"s3://datasets/{data}", "numberOfSteps": 100,
            "numberOfFrames": 25, "resolution": "low", "aspectRatio": "16:9",
            "withAudio": with_audio, "rank": 8, "validationNumberOfFrames": 25,
            "validationResolution": "low", "validationAspectRatio": "16:9",
            "validation": [{"prompt": f"a square glides in, take {i}",
                            "videoUrl": f"s3://datasets/closing-{i}.mp4"}
                           for i in range(closing)], **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def operator_settings() -> OperatorSettings:
    """The operator as a platform team would install it for this cluster."""
    return OperatorSettings(store_url="s3://runs/trainings", store_secret=STORE_SECRET,
                            model_claim_name="models", trainer_image=IMAGE,
                            progress_port=_free_port(), metrics_port=0,
                            trainer_args=TRAINER_ARGS, prepare_cpu="1", train_cpu="1")


@pytest_asyncio.fixture
async def kubelet(cluster: Cluster, s3_server, e2e_media, tiny_model: Path,
                  tmp_path: Path) -> AsyncIterator[Kubelet]:
    await cluster.create(SECRETS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORE_SECRET},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in s3_server.env.items()}})
    entrypoint = [str(Path(sys.executable).parent / "ltx-extend")]  # the image's ENTRYPOINT
    async with Kubelet(cluster, {IMAGE: entrypoint}, {"models": tiny_model},
                       tmp_path / "node") as kubelet:
        yield kubelet
        assert not kubelet.errors, kubelet.errors


async def finished(cluster: Cluster, name: str, kubelet: Kubelet) -> dict[str, Any]:
    async def done() -> dict | None:
        training = await cluster.training(name)
        phase = (training.get("status") or {}).get("phase")
        return training if phase in ("Succeeded", "Failed") else None

    try:
        return await cluster.until(done, timeout=DEADLINE)
    except AssertionError:
        pods = [*kubelet.removed, *(p for s in kubelet.jobs.values() for p in s.pods)]
        logs = {p.name: p.log()[-3000:] for p in pods}
        raise AssertionError(f"{name} did not finish; pod logs: {json.dumps(logs, indent=1)}"
                             ) from None


def conditions(training: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in training["status"]["conditions"]}


async def assert_succeeded(cluster: Cluster, name: str, training: dict[str, Any],
                           s3_server, tiny_model: Path, tmp_path: Path, audio: bool,
                           reel_clips: int) -> None:
    status = training["status"]
    assert status["phase"] == "Succeeded", status
    assert conditions(training) == {
        "Validated": ("True", "Valid"), "DatasetReady": ("True", "DatasetReady"),
        "Training": ("False", "Completed"), "Succeeded": ("True", "Succeeded")}
    assert status["billing"]["units"] == 100 and status["billing"]["steps"] == 100
    assert status["progress"]["summary"] == "100/100"
    expected = ("PrepareStarted", "TrainingStarted", "Billed", "Succeeded")
    reasons = await cluster.event_reasons(name, *expected)
    for reason in expected:
        assert reasons.count(reason) == 1, reasons
    assert not {"Failed", "InvalidInput", "InternalError"} & set(reasons)

    run = f"s3://runs/trainings/{NAMESPACE}/{name}/{training['metadata']['uid']}/outputs"
    artifacts = status["artifacts"]
    assert artifacts["loraFile"] == f"{run}/lora.safetensors"
    local = {key: _download(s3_server, artifacts[key], tmp_path / key)
             for key in ("loraFile", "configFile", "video")}
    config = json.loads(local["configFile"].read_text())
    assert config["withAudio"] is audio

    from diffusers import LTX2Pipeline
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    pipe = LTX2Pipeline.from_pretrained(tiny_model)
    pipe.load_lora_weights(str(local["loraFile"]), adapter_name="extend")
    loaded = get_peft_model_state_dict(pipe.transformer, adapter_name="extend")
    assert len(loaded) == len(load_file(local["loraFile"]))  # every tensor found its module

    with av.open(str(local["video"])) as reel:
        assert reel.streams.video and bool(reel.streams.audio) is audio
        frames = sum(1 for _ in reel.decode(video=0))
    # each validation clip: the generated lead-in, then the real closing clip (25 frames)
    assert frames >= reel_clips * 25


def _download(s3_server, url: str, dest: Path) -> Path:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    s3_server.client().fget_object(bucket, key, str(dest))
    return dest


async def test_video_only_with_one_validation_clip(cluster, kubelet, s3_server, tiny_model,
                                                   tmp_path):
    """The base model given by URL: the train pod downloads it (onto its volume: the
    harness refuses writes anywhere else)."""
    await cluster.apply("video-only", spec("clips.zip", closing=1, with_audio=False,
                                           model={"url": "s3://models/tiny"}))
    training = await finished(cluster, "video-only", kubelet)
    await assert_succeeded(cluster, "video-only", training, s3_server, tiny_model, tmp_path,
                           audio=False, reel_clips=1)
    assert training["status"]["effective"]["model"] == "s3://models/tiny"
    train = (await cluster.jobs())["video-only-train"]
    container = train["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "model" not in {v["name"] for v in train["spec"]["template"]["spec"]["volumes"]}
    assert [len(kubelet.pods(j)) for j in ("video-only-prepare", "video-only-train")] == [1, 1]


async def test_joint_audio_with_two_validation_clips(cluster, kubelet, s3_server, tiny_model,
                                                     tmp_path):
    await cluster.apply("with-audio", spec("clips.zip", closing=2, with_audio=True))
    training = await finished(cluster, "with-audio", kubelet)
    await assert_succeeded(cluster, "with-audio", training, s3_server, tiny_model, tmp_path,
                           audio=True, reel_clips=2)


async def assert_refused(cluster: Cluster, name: str, training: dict[str, Any],
                         message: str) -> None:
    status = training["status"]
    assert status["phase"] == "Failed"
    assert status["billing"]["units"] == 0
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidInput" and message in failed["message"], failed
    assert "DatasetReady" not in conditions(training)
    assert set(await cluster.jobs()) == {f"{name}-prepare"}  # no train Job, no GPU asked
    await cluster.event_reasons(name, "InvalidInput")
    events = {e["reason"]: e for e in await cluster.events(name)}
    assert events["InvalidInput"]["type"] == "Warning"
    assert "Billed" not in events and "TrainingStarted" not in events


async def test_a_dataset_of_too_short_clips_fails_with_no_train_job(cluster, kubelet):
    await cluster.apply("too-short", spec("short.zip", numberOfFrames=89))
    training = await finished(cluster, "too-short", kubelet)
    await assert_refused(cluster, "too-short", training, TOO_SHORT)


async def test_with_audio_and_a_silent_clip_is_refused_in_prepare(cluster, kubelet):
    await cluster.apply("silent", spec("silent.zip", with_audio=True))
    training = await finished(cluster, "silent", kubelet)
    await assert_refused(cluster, "silent", training,
                         "withAudio is on, but these clips have no audio track")
    pod = kubelet.pods("silent-prepare")[0]
    assert json.loads(pod.root.joinpath("termination-log").read_text())["exitCode"] == 3


async def test_a_preempted_train_pod_resumes_and_bills_once(cluster, kubelet, s3_server,
                                                            tiny_model, tmp_path):
    await cluster.apply("preempted", spec("clips.zip", closing=1))
    client = s3_server.client()

    async def checkpointed() -> bool:
        training = await cluster.training("preempted")
        uid = training["metadata"]["uid"]
        prefix = f"trainings/{NAMESPACE}/preempted/{uid}/checkpoints/step-000040/"
        return any(o.object_name.endswith("state.pt")
                   for o in client.list_objects("runs", prefix=prefix, recursive=True))

    await cluster.until(checkpointed, timeout=DEADLINE)
    await kubelet.preempt("preempted-train")
    training = await finished(cluster, "preempted", kubelet)
    await assert_succeeded(cluster, "preempted", training, s3_server, tiny_model, tmp_path,
                           audio=True, reel_clips=1)
    first, second = kubelet.pods("preempted-train")  # the eviction cost no backoff
    assert first.disrupted and "resumed from step-000040" in second.log()
    assert "encoded " not in second.log()  # the latent cache came from the store
    job = (await cluster.jobs())["preempted-train"]
    assert job["status"].get("failed", 0) == 0


async def test_an_operator_restart_mid_training_bills_once(cluster, kubelet, s3_server,
                                                           tiny_model, tmp_path):
    await cluster.apply("restarted", spec("clips.zip", closing=1))

    async def training_progressed() -> bool:  # progress pulled from the pod's /progress
        progress = ((await cluster.training("restarted")).get("status") or {}).get("progress")
        return bool(progress and progress.get("stage") == "training"
                    and 0 < progress["step"] < 100)

    await cluster.until(training_progressed, timeout=DEADLINE)
    await cluster.stop_operator()
    pod = kubelet.pods("restarted-train")[-1]
    assert pod.process.returncode is None  # training goes on without the operator
    cluster.start_operator()
    training = await finished(cluster, "restarted", kubelet)
    await assert_succeeded(cluster, "restarted", training, s3_server, tiny_model, tmp_path,
                           audio=True, reel_clips=1)
    assert len(kubelet.pods("restarted-train")) == 1
