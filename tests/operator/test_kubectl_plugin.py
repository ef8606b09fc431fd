"""`kubectl ltx` against the API emulator (through a kubeconfig, as kubectl would run
it) and the S3 server on loopback (the presigned links)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from ltx_contract.result import JobResult
from ltx_operator.kubectl_plugin import main

from harness.kube_api import write_kubeconfig
from harness.operator_cluster import NAMESPACE, PODS, TRAININGS

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def kubectl(api_server, tmp_path: Path, capsys):
    """Runs the plugin as a user of the cluster: (exit code, stdout, stderr)."""
    import aiohttp

    from harness.operator_cluster import Cluster

    emulator, url = api_server
    config = write_kubeconfig(tmp_path / "kubeconfig", url, "a-user", NAMESPACE)

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["--kubeconfig", str(config), *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    async with aiohttp.ClientSession() as session:
        run.cluster = Cluster(url, session)
        run.emulator = emulator
        yield run


async def training(cluster, name: str, status: dict) -> None:
    await cluster.create(TRAININGS, {
        "apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"trainingDataUrl": "s3://d/c.zip"}})
    await cluster.request("PATCH", f"{TRAININGS}/{name}/status", {"status": status})


async def test_status_tells_waiting_from_working(kubectl):
    await training(kubectl.cluster, "door", {
        "phase": "Pending", "jobs": {"prepare": "door-prepare", "train": "door-train"},
        "effective": {"model": "pvc://models/ltx-2.3"},
        "progress": {"step": 500, "totalSteps": 2000, "summary": "500/2000", "percent": 25.0,
                     "loss": 0.125, "etaSeconds": 5400},
        "validation": {"loss": 0.31, "step": 500, "bestLoss": 0.29, "bestStep": 250,
                       "heldOut": True, "windows": 4},
        "conditions": [{"type": "Validated", "status": "True", "reason": "Valid"},
                       {"type": "Running", "status": "False", "reason": "Unschedulable",
                        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]})
    code, out, _ = await kubectl("status", "door")
    assert code == 0
    assert out.splitlines()[0] == f"LtxExtendTraining {NAMESPACE}/door: Pending"
    assert "waiting: Unschedulable: 0/2 nodes are available" in out
    assert "progress: step 500/2000, 25%, loss 0.1250, about 1 h 30 min left" in out
    assert "validation loss: 0.3100 at step 500 (held-out clips), best 0.2900 at step 250" \
        in out
    assert "model: pvc://models/ltx-2.3" in out and "train Job: door-train" in out
    code, _, err = await kubectl("status", "nowhere")
    assert code == 1 and f"LtxExtendTraining nowhere not found in namespace {NAMESPACE}" in err
    assert "Traceback" not in err


async def test_logs_show_the_active_stage(kubectl):
    await training(kubectl.cluster, "door", {"phase": "Training",
                                             "jobs": {"prepare": "door-prepare",
                                                      "train": "door-train"}})
    for pod, job in (("door-prepare-a", "door-prepare"), ("door-train-b", "door-train")):
        await kubectl.cluster.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": pod, "namespace": NAMESPACE, "labels": {"job-name": job}}})
        kubectl.emulator.pod_logs[NAMESPACE, pod] = f"{job}: step 1\n{job}: step 2\n"
    code, out, _ = await kubectl("logs", "door")
    assert code == 0 and out == "door-train: step 1\ndoor-train: step 2\n"
    code, out, _ = await kubectl("logs", "door", "--stage", "prepare", "--tail", "1")
    assert code == 0 and out == "door-prepare: step 2\n"


async def test_fetch_downloads_through_the_presigned_links(kubectl, s3_server, tmp_path):
    client = s3_server.client()
    if not client.bucket_exists("runs"):
        client.make_bucket("runs")
    run = "team/door/u-1"
    result = JobResult(stage="train", outcome="Succeeded", steps_completed=100)
    for field, name, data in (("lora_file", "lora.safetensors", b"weights" * 1000),
                              ("video", "validation.mp4", b"frames" * 500)):
        source = tmp_path / name
        source.write_bytes(data)
        client.fput_object("runs", f"{run}/outputs/{name}", str(source))
        setattr(result.download_urls, field, client.presigned_get_object(
            "runs", f"{run}/outputs/{name}", expires=timedelta(hours=1)))
    document = tmp_path / "result-train.json"
    document.write_text(result.to_json())
    client.fput_object("runs", f"{run}/result-train.json", str(document))
    link = client.presigned_get_object("runs", f"{run}/result-train.json",
                                       expires=timedelta(hours=1))
    await training(kubectl.cluster, "door", {"phase": "Succeeded", "resultUrl": link})
    dest = tmp_path / "got"
    code, out, err = await kubectl("fetch", "door", "-o", str(dest))
    assert code == 0, err
    assert (dest / "lora.safetensors").read_bytes() == b"weights" * 1000
    assert (dest / "validation.mp4").read_bytes() == b"frames" * 500
    assert not list(dest.glob("*.partial")) and "lora.safetensors (7000 bytes)" in out

    await training(kubectl.cluster, "busy", {"phase": "Training"})
    code, _, err = await kubectl("fetch", "busy")
    assert code == 1 and "busy has no artifacts to fetch: it is Training" in err
