"""End to end on one machine: the real control plane (kube-apiserver, etcd, the Job
controller and the garbage collector), the operator running for real with its chart's
ServiceAccount and role, the pods of the trainer's Jobs run as local processes by the
node-playing harness, the tiny model as the mounted model volume, and an S3-compatible
server on loopback as the artifact store. Each scenario checks what a user sees: status,
conditions, Events, billing, and artifacts that download and load."""

from __future__ import annotations

import asyncio
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

from harness.kubelet import NodeKubelet
from harness.media_factory import make_clip
from harness.operator_cluster import NAMESPACE, SECRETS, TRAININGS, Cluster, kubectl

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]
IMAGE = "ltx-extend/trainer:e2e"
STORE_SECRET = "ltx-extend-store"
# Small checkpoints and previews, so a run takes seconds on a CPU (an operator setting).
TRAINER_ARGS = ["--max-sequence-length", "32", "--checkpoint-every", "40",
                "--preview-steps", "2"]
DEADLINE = 400.0  # seconds a scenario may take on a 2-core machine
NODE_SELECTOR = {"kubernetes.io/hostname": NodeKubelet.NODE}


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
                            trainer_args=TRAINER_ARGS, prepare_cpu="1", train_cpu="1",
                            # the harness's node (a cluster's scheduler puts them there)
                            prepare_node_selector=NODE_SELECTOR,
                            train_node_selector=NODE_SELECTOR)


@pytest_asyncio.fixture
async def cluster(real_cluster: Cluster) -> Cluster:
    """These scenarios run on the real control plane."""
    return real_cluster


@pytest_asyncio.fixture
async def kubelet(cluster: Cluster, s3_server, e2e_media, tiny_model: Path,
                  tmp_path: Path) -> AsyncIterator[NodeKubelet]:
    await cluster.create(SECRETS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORE_SECRET},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in s3_server.env.items()}})
    entrypoint = [str(Path(sys.executable).parent / "ltx-extend")]  # the image's ENTRYPOINT
    async with NodeKubelet(cluster, {IMAGE: entrypoint}, {"models": tiny_model},
                           tmp_path / "node") as kubelet:
        yield kubelet
        assert not kubelet.errors, kubelet.errors


async def finished(cluster: Cluster, name: str, kubelet: NodeKubelet) -> dict[str, Any]:
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


async def until_checkpointed(cluster: Cluster, s3_server, name: str) -> None:
    """Wait until the training's step-40 checkpoint is complete in the store."""
    client = s3_server.client()

    async def checkpointed() -> bool:
        uid = (await cluster.training(name))["metadata"]["uid"]
        prefix = f"trainings/{NAMESPACE}/{name}/{uid}/checkpoints/step-000040/"
        return any(o.object_name.endswith("state.pt")
                   for o in client.list_objects("runs", prefix=prefix, recursive=True))

    await cluster.until(checkpointed, timeout=DEADLINE)


def conditions(training: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in training["status"]["conditions"]}


async def assert_succeeded(cluster: Cluster, name: str, training: dict[str, Any],
                           s3_server, tiny_model: Path, tmp_path: Path, audio: bool,
                           reel_clips: int, **more_conditions: tuple[str, str]) -> None:
    status = training["status"]
    assert status["phase"] == "Succeeded", status
    assert conditions(training) == {
        "Validated": ("True", "Valid"), "DatasetReady": ("True", "DatasetReady"),
        "Training": ("False", "Completed"), "Succeeded": ("True", "Succeeded"),
        "CaptionsComplete": ("True", "AllCaptioned"), **more_conditions}
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
    await until_checkpointed(cluster, s3_server, "preempted")
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



async def test_kubectl_delete_mid_training_stops_the_pods_and_bills_nothing(
        cluster, kubelet, real_api):
    """`kubectl delete` while the train pod runs: the operator releases its finalizer, the
    garbage collector deletes the Jobs, the node stops the pods; no bill, no Billed
    Event."""
    from ltx_operator import metrics

    billed = metrics.BILLABLE_UNITS._value.get()
    await cluster.apply("dropped", spec("clips.zip", closing=1, with_audio=False))
    await cluster.until(lambda: training_step(cluster, "dropped", 1), timeout=DEADLINE)
    pod = kubelet.pods("dropped-train")[-1]
    deleted = await asyncio.to_thread(kubectl, real_api.plane, "delete", "-n", NAMESPACE,
                                      "ltxt", "dropped", "--wait=true", "--timeout=60s")
    assert 'deleted' in deleted.stdout, deleted

    async def cleaned() -> bool:
        listed = await cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
        return not await cluster.jobs() and not listed["items"]

    await cluster.until(cleaned, timeout=60)
    assert pod.process.returncode is not None  # the container was stopped
    assert metrics.BILLABLE_UNITS._value.get() == billed
    assert "Billed" not in {e["reason"] for e in await cluster.events("dropped")}


async def test_suspend_mid_training_and_resume_from_the_checkpoint(
        cluster, kubelet, s3_server, tiny_model, tmp_path):
    """`spec.suspend` as Kueue or a user sets it: the Job controller deletes the running
    pod, the training is `Suspended`; resumed, a new pod goes on from the checkpoint;
    billed once."""
    await cluster.apply("paused", spec("clips.zip", closing=1, with_audio=False))
    await until_checkpointed(cluster, s3_server, "paused")
    await cluster.request("PATCH", f"{TRAININGS}/paused", {"spec": {"suspend": True}})
    await cluster.until(lambda: cluster.phase("paused", "Suspended"), timeout=60)
    (first,) = kubelet.pods("paused-train")

    async def stopped() -> bool:
        return first.process.returncode is not None

    await cluster.until(stopped, timeout=60)  # the Job controller deleted the pod
    await cluster.request("PATCH", f"{TRAININGS}/paused", {"spec": {"suspend": False}})
    training = await finished(cluster, "paused", kubelet)
    await assert_succeeded(cluster, "paused", training, s3_server, tiny_model, tmp_path,
                           audio=False, reel_clips=1, Suspended=("False", "Resumed"))
    first, second = kubelet.pods("paused-train")
    assert "resumed from step-0000" in second.log(), second.log()[-3000:]
    reasons = await cluster.event_reasons("paused", "Suspended", "Resumed")
    assert reasons.count("Resumed") == 1

# --- faults only a real API server shows -------------------------------------------------
# The server's audit log says what the operator's account was answered.

async def training_step(cluster: Cluster, name: str, at_least: int) -> bool:
    progress = ((await cluster.training(name)).get("status") or {}).get("progress") or {}
    return progress.get("stage") == "training" and progress.get("step", 0) >= at_least


async def test_an_api_server_restart_on_a_compacted_history_loses_nothing(
        cluster, kubelet, real_api, s3_server, tiny_model, tmp_path):
    """Mid-training the API server is killed; etcd's history is compacted while it is
    away; it starts again. A watch from before is answered 410 Gone; the operator's
    watches start again from a fresh list, the Job controller and the node carry on,
    and the training finishes, billed once."""
    plane = real_api.plane
    if plane.existing:
        pytest.skip("kills the API server: needs the tests' own control plane")
    await cluster.apply("outage", spec("clips.zip", closing=1, with_audio=False))
    await cluster.until(lambda: training_step(cluster, "outage", 1), timeout=DEADLINE)
    before = (await cluster.training("outage"))["metadata"]["resourceVersion"]

    def restart() -> float:
        plane.processes["kube-apiserver"].kill()
        plane.compact()
        return plane.restart_apiserver()

    away = await asyncio.to_thread(restart)
    assert away < 120
    # a watch answers a version older than the compaction with a 410 Gone event
    events = await asyncio.to_thread(
        plane.request, "GET", f"{TRAININGS}?watch=1&resourceVersion={before}"
        "&timeoutSeconds=2", lines=True)
    assert events and events[0]["type"] == "ERROR", events
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")
    training = await finished(cluster, "outage", kubelet)
    await assert_succeeded(cluster, "outage", training, s3_server, tiny_model, tmp_path,
                           audio=False, reel_clips=1)
    assert len(kubelet.pods("outage-train")) == 1  # the pod ran on through the outage


async def test_status_writes_that_conflict_are_computed_again_and_billed_once(
        cluster, kubelet, real_api, s3_server, tiny_model, tmp_path):
    """A second writer (a GitOps tool, a user's label) changes the resource all through
    the training: the operator's status writes, which name the version they were
    computed from, are refused with 409 by the server, read again, and land."""
    plane = real_api.plane
    if plane.existing:
        pytest.skip("reads the API server's audit log: needs the tests' own control plane")
    await cluster.apply("contended", spec("clips.zip", closing=1, with_audio=False))
    stop = asyncio.Event()

    async def another_writer() -> int:
        writes = 0
        while not stop.is_set():
            await cluster.request("PATCH", f"{TRAININGS}/contended", {
                "metadata": {"annotations": {"example.com/touched": str(writes)}}})
            writes += 1
            await asyncio.sleep(0.02)
        return writes

    writer = asyncio.create_task(another_writer())
    try:
        training = await finished(cluster, "contended", kubelet)
    finally:
        stop.set()
        writes = await writer
    await assert_succeeded(cluster, "contended", training, s3_server, tiny_model, tmp_path,
                           audio=False, reel_clips=1)
    answers = plane.audit(resource="ltxextendtrainings", subresource="status",
                          name="contended", user=real_api.operator_user)
    codes = [a["responseStatus"]["code"] for a in answers if a["verb"] == "patch"]
    assert writes > 50 and 409 in codes and 200 in codes, (writes, codes)
    assert training["metadata"]["annotations"]["example.com/touched"], json.dumps(training)
    assert training["metadata"]["namespace"] == NAMESPACE
