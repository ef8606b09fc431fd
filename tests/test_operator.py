"""The operator running for real against kmock; the test plays kubelet and Job
controller over HTTP, as a cluster would."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
import pytest_asyncio

import kube_api

# timer intervals are read when the handlers module loads
os.environ.setdefault("LTX_OPERATOR_PROGRESS_INTERVAL", "0.5")
os.environ.setdefault("LTX_OPERATOR_TTL_INTERVAL", "0.5")
os.environ.setdefault("LTX_OPERATOR_METRICS_PORT", "0")

import kopf
from kubernetes import client

from ltx_operator import handlers, kube
from ltx_operator.settings import OperatorSettings
from ltx_trainer.progress import ProgressServer, ProgressState

TRAININGS = "/apis/ltx-training.io/v1alpha1/namespaces/team/ltxextendtrainings"
JOBS = "/apis/batch/v1/namespaces/team/jobs"
PODS = "/api/v1/namespaces/team/pods"
SERVER: dict[str, str] = {}
pytestmark = pytest.mark.asyncio


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=SERVER["url"], scheme="Bearer", token="test",
                               insecure=True)


class Cluster:
    def __init__(self, url: str, session: aiohttp.ClientSession):
        self.url, self.session = url, session
        self.operator: threading.Thread | None = None
        self.stop = threading.Event()

    def start_operator(self) -> None:
        # The operator gets its own thread and event loop, as Kopf's embedding guide says:
        # on shutdown it cancels every task of its loop, which must not be the test's.
        self.stop = threading.Event()
        stop = self.stop
        self.operator = threading.Thread(target=lambda: asyncio.run(
            kopf.operator(clusterwide=True, stop_flag=stop)), daemon=True)
        self.operator.start()

    async def stop_operator(self) -> None:
        self.stop.set()
        await asyncio.to_thread(self.operator.join, 20)
        assert not self.operator.is_alive(), "the operator did not stop"

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/merge-patch+json") -> Any:
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(method, self.url + path, data=json.dumps(body)
                                        if body is not None else None, headers=headers) as r:
            text = await r.text()
            return json.loads(text) if text else None

    async def apply(self, name: str, spec: dict[str, Any], labels: dict | None = None) -> None:
        # kmock 0.8 assigns no uid, generation, resourceVersion or creationTimestamp; the
        # API server does, so this apply sets them as it would on creation. (kmock does not
        # bump resourceVersion on later writes, so optimistic concurrency is not exercised.)
        body = {"apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
                "metadata": {"name": name, "namespace": "team", "uid": str(uuid.uuid4()),
                             "generation": 1, "resourceVersion": "1",
                             "creationTimestamp": "2026-11-24T00:00:00Z",
                             "labels": labels or {}},
                "spec": spec}
        await self.request("POST", TRAININGS, body, "application/json")

    async def training(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"{TRAININGS}/{name}")

    async def jobs(self) -> dict[str, dict[str, Any]]:
        listed = await self.request("GET", JOBS)
        return {j["metadata"]["name"]: j for j in listed.get("items", [])}

    async def finish(self, job: str, succeeded: bool, result: dict[str, Any] | None,
                     exit_code: int = 0, reason: str = "Completed",
                     job_reason: str | None = None) -> None:
        """What kubelet and the Job controller do when the Job's pod ends."""
        await self.request("POST", PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job}-{uuid.uuid4().hex[:5]}", "namespace": "team",
                         "labels": {"job-name": job},
                         "creationTimestamp": "2026-11-24T00:01:00Z"},
            "status": {"phase": "Succeeded" if succeeded else "Failed", "containerStatuses": [{
                "name": "trainer", "ready": False, "restartCount": 0, "image": "t",
                "imageID": "", "state": {"terminated": {
                    "exitCode": exit_code, "reason": reason,
                    "message": json.dumps(result) if result else ""}}}]},
        }, "application/json")
        condition = {"type": "Complete" if succeeded else "Failed", "status": "True",
                     "reason": job_reason or ("Completed" if succeeded else "BackoffLimitExceeded")}
        await self.request("PATCH", f"{JOBS}/{job}", {"status": {"conditions": [condition]}})

    async def until(self, check: Any, timeout: float = 20.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await check()
            if value:
                return value
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    emulator = kmock.KubernetesEmulator()
    async with emulator, kmock.Server(emulator) as server:
        SERVER["url"] = str(server.url).rstrip("/")
        kube_api.declare(emulator)
        kube.configure(client.ApiClient(client.Configuration(host=SERVER["url"])))
        handlers.configure(OperatorSettings(store_url="s3://runs", metrics_port=0))
        async with aiohttp.ClientSession() as session:
            cluster = Cluster(SERVER["url"], session)
            cluster.start_operator()
            yield cluster
            await cluster.stop_operator()


SPEC = {"trainingDataUrl": "s3://datasets/clips.zip", "numberOfSteps": 2000, "gpus": 2,
        "nodeSelector": {"gpu": "h100"}, "priorityClassName": "training",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


async def test_a_training_from_apply_to_billed_success(cluster):
    await cluster.apply("door", SPEC, labels={"kueue.x-k8s.io/queue-name": "gpus"})
    jobs = await cluster.until(cluster.jobs)
    prepare = jobs["door-prepare"]
    container = prepare["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["job", "prepare"]
    assert not any("gpu" in k for k in container["resources"]["requests"])  # no GPU asked
    env = {e["name"]: e.get("value") for e in container["env"]}
    training = await cluster.training("door")
    assert env["LTX_EXTEND_RUN"] == f"team/door/{training['metadata']['uid']}"
    assert json.loads(env["LTX_EXTEND_SPEC"])["numberOfFrames"] == 89
    assert prepare["metadata"]["ownerReferences"][0]["name"] == "door"
    assert prepare["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    assert training["status"]["phase"] == "Preparing"

    await cluster.finish("door-prepare", True, {"outcome": "Succeeded",
                                                "reason": "DatasetReady",
                                                "message": "12 samples ready"})
    jobs = await cluster.until(lambda: _has(cluster, "door-train"))
    train = jobs["door-train"]
    pod = train["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["priorityClassName"] == "training"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    rules = train["spec"]["podFailurePolicy"]["rules"]
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[0]["onExitCodes"]["values"] == [3, 4]
    training = await cluster.training("door")
    assert training["status"]["phase"] == "Training"

    artifacts = {"loraFile": "s3://runs/team/door/x/outputs/lora.safetensors"}
    await cluster.finish("door-train", True, {"outcome": "Succeeded", "stepsCompleted": 2000,
                                              "artifacts": artifacts, "message": "done"})
    training = await cluster.until(lambda: _phase(cluster, "door", "Succeeded"))
    status = training["status"]
    assert status["billing"]["units"] == 2000 and status["billing"]["cost"] == "12.20"
    assert status["artifacts"]["loraFile"] == artifacts["loraFile"]
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {"Validated": "True", "DatasetReady": "True", "Training": "False",
                     "Succeeded": "True"}
    # a replayed Job event bills nothing twice
    await cluster.request("PATCH", f"{JOBS}/door-train", {"metadata": {"labels": {"x": "y"}}})
    await asyncio.sleep(1.0)
    assert (await cluster.training("door"))["status"]["billing"] == status["billing"]


async def _has(cluster: Cluster, name: str) -> dict | None:
    jobs = await cluster.jobs()
    return jobs if name in jobs else None


async def _phase(cluster: Cluster, name: str, phase: str) -> dict | None:
    training = await cluster.training(name)
    return training if (training.get("status") or {}).get("phase") == phase else None


async def test_an_invalid_spec_fails_without_a_job(cluster):
    await cluster.apply("bad", {"trainingDataUrl": "s3://d/c.zip", "conditioningFrames": 12})
    training = await cluster.until(lambda: _phase(cluster, "bad", "Failed"))
    failed = next(c for c in training["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "conditioningFrames (12) must be a multiple of 8" in failed["message"]
    assert training["status"]["billing"]["units"] == 0
    assert await cluster.jobs() == {}


@pytest.mark.parametrize(("result", "reason"), [
    ({"outcome": "Failed", "reason": "InvalidInput",
      "message": "All training videos are too short to be trainable"}, "InvalidInput"),
    ({"outcome": "Failed", "reason": "DownloadFailed",
      "message": "could not download the training data from example.com: HTTP 404"},
     "DownloadFailed"),
])
async def test_a_rejected_dataset_fails_with_no_train_job_and_no_bill(cluster, result, reason):
    await cluster.apply("short", SPEC)
    await cluster.until(lambda: _has(cluster, "short-prepare"))
    await cluster.finish("short-prepare", False, result, exit_code=3,
                         reason="Error", job_reason="PodFailurePolicy")
    training = await cluster.until(lambda: _phase(cluster, "short", "Failed"))
    failed = next(c for c in training["status"]["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == (reason, result["message"])
    assert training["status"]["billing"]["units"] == 0
    await asyncio.sleep(0.5)
    assert set(await cluster.jobs()) == {"short-prepare"}  # no GPU was ever requested


@pytest.mark.parametrize(("container_reason", "job_reason", "reason"), [
    ("OOMKilled", "BackoffLimitExceeded", "OOMKilled"),
    ("Error", "DeadlineExceeded", "DeadlineExceeded"),
    ("Error", "BackoffLimitExceeded", "BackoffLimitExceeded"),
])
async def test_a_failed_train_job_fails_the_training_with_its_reason(
        cluster, container_reason, job_reason, reason):
    await cluster.apply("oom", SPEC)
    await cluster.until(lambda: _has(cluster, "oom-prepare"))
    await cluster.finish("oom-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: _has(cluster, "oom-train"))
    await cluster.finish("oom-train", False, None, exit_code=137, reason=container_reason,
                         job_reason=job_reason)
    training = await cluster.until(lambda: _phase(cluster, "oom", "Failed"))
    failed = next(c for c in training["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == reason and training["status"]["billing"]["units"] == 0


async def test_progress_is_pulled_from_the_train_pod(cluster):
    state = ProgressState()
    with ProgressServer(state, 0, host="127.0.0.1") as server:
        handlers.configure(handlers.SETTINGS.model_copy(update={"progress_port": server.port}))
        await cluster.apply("live", SPEC)
        await cluster.until(lambda: _has(cluster, "live-prepare"))
        await cluster.finish("live-prepare", True, {"outcome": "Succeeded"})
        await cluster.until(lambda: _has(cluster, "live-train"))
        await cluster.request("POST", PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "live-train-abcde", "namespace": "team",
                         "labels": {"job-name": "live-train"}},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}, "application/json")
        state.stage("training")
        state.step(500, 2000, 0.25, 2.0, 750.0)

        async def progressed() -> dict | None:
            training = await cluster.training("live")
            progress = (training.get("status") or {}).get("progress") or {}
            return progress if progress.get("step") == 500 else None

        progress = await cluster.until(progressed)
    assert (progress["summary"], progress["percent"], progress["loss"]) == ("500/2000", 25.0,
                                                                            0.25)


async def test_suspend_and_resume_the_active_job(cluster):
    await cluster.apply("pause", SPEC)
    await cluster.until(lambda: _has(cluster, "pause-prepare"))
    await cluster.until(lambda: _phase(cluster, "pause", "Preparing"))
    await cluster.request("PATCH", f"{TRAININGS}/pause", {"spec": {"suspend": True}})
    training = await cluster.until(lambda: _phase(cluster, "pause", "Suspended"))
    assert (await cluster.jobs())["pause-prepare"]["spec"]["suspend"] is True
    assert any(c["type"] == "Suspended" and c["status"] == "True"
               for c in training["status"]["conditions"])
    await cluster.request("PATCH", f"{TRAININGS}/pause", {"spec": {"suspend": False}})
    await cluster.until(lambda: _phase(cluster, "pause", "Preparing"))
    assert (await cluster.jobs())["pause-prepare"]["spec"]["suspend"] is False


async def test_ttl_deletes_the_finished_resource(cluster):
    await cluster.apply("brief", {**SPEC, "conditioningFrames": 12,
                                  "ttlSecondsAfterFinished": 0})

    async def gone() -> bool:
        listed = await cluster.request("GET", TRAININGS)
        return not any(i["metadata"]["name"] == "brief" for i in listed.get("items", []))
    await cluster.until(gone)


async def test_an_operator_restart_mid_run_converges_and_bills_once(cluster):
    await cluster.apply("steady", SPEC)
    await cluster.until(lambda: _has(cluster, "steady-prepare"))
    await cluster.stop_operator()
    await cluster.finish("steady-prepare", True, {"outcome": "Succeeded"})  # while it is down
    cluster.start_operator()
    await cluster.until(lambda: _has(cluster, "steady-train"))
    await cluster.stop_operator()
    await cluster.finish("steady-train", True, {"outcome": "Succeeded", "stepsCompleted": 2000})
    cluster.start_operator()
    training = await cluster.until(lambda: _phase(cluster, "steady", "Succeeded"))
    billing = training["status"]["billing"]
    await cluster.stop_operator()
    cluster.start_operator()  # every Job event is replayed to the new operator
    await asyncio.sleep(1.5)
    training = await cluster.training("steady")
    assert training["status"]["billing"] == billing and billing["units"] == 2000
    assert set(await cluster.jobs()) == {"steady-prepare", "steady-train"}


async def test_metrics_are_served_over_http(cluster):
    from prometheus_client.parser import text_string_to_metric_families

    from ltx_operator import metrics

    def scrape(port: int) -> dict[str, float]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            text = response.read().decode()
        return {f"{s.name}{sorted(s.labels.items())}": s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    port = _free_port()
    metrics.serve(port)
    before = scrape(port)
    await cluster.apply("counted", SPEC)
    await cluster.until(lambda: _has(cluster, "counted-prepare"))
    await cluster.finish("counted-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: _has(cluster, "counted-train"))
    await cluster.finish("counted-train", True, {"outcome": "Succeeded", "stepsCompleted": 2000})
    await cluster.until(lambda: _phase(cluster, "counted", "Succeeded"))
    after = scrape(port)

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert delta("ltx_operator_jobs_created_total[('stage', 'train')]") == 1
    assert delta("ltx_operator_billable_units_total[]") == 2000
    assert delta("ltx_operator_outcomes_total[('reason', 'Succeeded')]") == 1
    assert after["ltx_operator_resources[('phase', 'Succeeded')]"] >= 1
    assert delta("ltx_operator_seconds_to_finish_count[('outcome', 'Succeeded')]") == 1
    assert delta("ltx_operator_seconds_to_train_job_count[]") == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_deleting_a_running_training_stops_its_jobs_and_bills_nothing(cluster):
    await cluster.apply("gone", SPEC)
    await cluster.until(lambda: _has(cluster, "gone-prepare"))
    await cluster.finish("gone-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: _has(cluster, "gone-train"))
    await cluster.until(lambda: _phase(cluster, "gone", "Training"))
    training = await cluster.training("gone")
    assert "ltx-training.io/finalizer" in training["metadata"].get("finalizers", [])
    assert "billing" not in training["status"]
    await cluster.request("DELETE", f"{TRAININGS}/gone")

    async def cleaned() -> bool:
        listed = await cluster.request("GET", TRAININGS)
        return not await cluster.jobs() and not listed.get("items")

    await cluster.until(cleaned)
