"""The operator running for real against kmock; the test plays kubelet and Job
controller over HTTP, as a cluster would."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from ltx_operator import handlers
from ltx_trainer.progress import ProgressServer, ProgressState

from operator_cluster import JOBS, NAMESPACE, PODS, TRAININGS, Cluster

pytestmark = pytest.mark.asyncio


async def finish(cluster: Cluster, job: str, succeeded: bool, result: dict[str, Any] | None,
                 exit_code: int = 0, reason: str = "Completed",
                 job_reason: str | None = None) -> None:
    """What kubelet and the Job controller do when the Job's pod ends."""
    pod = await start_pod(cluster, job, f"{job}-{uuid.uuid4().hex[:5]}")
    await cluster.request("PATCH", f"{PODS}/{pod['metadata']['name']}/status", {"status": {
        "phase": "Succeeded" if succeeded else "Failed", "containerStatuses": [{
            "name": "trainer", "ready": False, "restartCount": 0, "image": "t",
            "imageID": "", "state": {"terminated": {
                "exitCode": exit_code, "reason": reason,
                "message": json.dumps(result) if result else ""}}}]}})
    condition = {"type": "Complete" if succeeded else "Failed", "status": "True",
                 "reason": job_reason or ("Completed" if succeeded else "BackoffLimitExceeded")}
    await cluster.request("PATCH", f"{JOBS}/{job}/status", {"status": {"conditions": [condition]}})


async def start_pod(cluster: Cluster, job: str, name: str) -> dict[str, Any]:
    """The Job controller's pod: the template's labels and `job-name`."""
    template = (await cluster.request("GET", f"{JOBS}/{job}"))["spec"]["template"]
    return await cluster.create(PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team",
                     "labels": {**template["metadata"]["labels"], "job-name": job}}})


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
    await cluster.until(lambda: cluster.phase("door", "Preparing"))

    await finish(cluster, "door-prepare", True, {"outcome": "Succeeded",
                                                "reason": "DatasetReady",
                                                "message": "12 samples ready"})
    jobs = await cluster.until(lambda: cluster.has_job("door-train"))
    train = jobs["door-train"]
    pod = train["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["priorityClassName"] == "training"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    rules = train["spec"]["podFailurePolicy"]["rules"]
    assert rules[1] == {"action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[0]["onExitCodes"]["values"] == [3, 4]
    await cluster.until(lambda: cluster.phase("door", "Training"))

    artifacts = {"loraFile": "s3://runs/team/door/x/outputs/lora.safetensors"}
    await finish(cluster, "door-train", True, {"outcome": "Succeeded", "stepsCompleted": 2000,
                                              "artifacts": artifacts, "message": "done"})
    training = await cluster.until(lambda: cluster.phase("door", "Succeeded"))
    status = training["status"]
    assert status["billing"]["units"] == 2000 and status["billing"]["cost"] == "12.20"
    assert status["artifacts"]["loraFile"] == artifacts["loraFile"]
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {"Validated": "True", "DatasetReady": "True", "Training": "False",
                     "Succeeded": "True"}
    expected = ("PrepareStarted", "TrainingStarted", "Billed", "Succeeded")
    reasons = await cluster.event_reasons("door", *expected)
    for reason in expected:
        assert reasons.count(reason) == 1, reasons
    # a replayed Job event bills nothing twice
    await cluster.request("PATCH", f"{JOBS}/door-train", {"metadata": {"labels": {"x": "y"}}})
    await asyncio.sleep(1.0)
    assert (await cluster.training("door"))["status"]["billing"] == status["billing"]


async def test_an_invalid_spec_fails_without_a_job(cluster):
    await cluster.apply("bad", {"trainingDataUrl": "s3://d/c.zip", "conditioningFrames": 12})
    training = await cluster.until(lambda: cluster.phase("bad", "Failed"))
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
    await cluster.until(lambda: cluster.has_job("short-prepare"))
    await finish(cluster, "short-prepare", False, result, exit_code=3,
                         reason="Error", job_reason="PodFailurePolicy")
    training = await cluster.until(lambda: cluster.phase("short", "Failed"))
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
    await cluster.until(lambda: cluster.has_job("oom-prepare"))
    await finish(cluster, "oom-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: cluster.has_job("oom-train"))
    await finish(cluster, "oom-train", False, None, exit_code=137, reason=container_reason,
                         job_reason=job_reason)
    training = await cluster.until(lambda: cluster.phase("oom", "Failed"))
    failed = next(c for c in training["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == reason and training["status"]["billing"]["units"] == 0


async def test_progress_is_pulled_from_the_train_pod(cluster):
    state = ProgressState()
    with ProgressServer(state, 0, host="127.0.0.1") as server:
        handlers.configure(handlers.current().model_copy(update={"progress_port": server.port}))
        await cluster.apply("live", SPEC)
        await cluster.until(lambda: cluster.has_job("live-prepare"))
        await finish(cluster, "live-prepare", True, {"outcome": "Succeeded"})
        await cluster.until(lambda: cluster.has_job("live-train"))
        await start_pod(cluster, "live-train", "live-train-abcde")
        await cluster.request("PATCH", f"{PODS}/live-train-abcde/status", {
            "status": {"phase": "Running", "podIP": "127.0.0.1"}})
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
    await cluster.until(lambda: cluster.has_job("pause-prepare"))
    await cluster.until(lambda: cluster.phase("pause", "Preparing"))
    await cluster.request("PATCH", f"{TRAININGS}/pause", {"spec": {"suspend": True}})
    training = await cluster.until(lambda: cluster.phase("pause", "Suspended"))
    assert (await cluster.jobs())["pause-prepare"]["spec"]["suspend"] is True
    assert any(c["type"] == "Suspended" and c["status"] == "True"
               for c in training["status"]["conditions"])
    await cluster.request("PATCH", f"{TRAININGS}/pause", {"spec": {"suspend": False}})
    await cluster.until(lambda: cluster.phase("pause", "Preparing"))
    assert (await cluster.jobs())["pause-prepare"]["spec"]["suspend"] is False


async def test_ttl_deletes_the_finished_resource(cluster):
    await cluster.apply("brief", {**SPEC, "conditioningFrames": 12,
                                  "ttlSecondsAfterFinished": 0})

    async def gone() -> bool:
        listed = await cluster.request("GET", TRAININGS)
        return not any(i["metadata"]["name"] == "brief" for i in listed.get("items", []))
    await cluster.until(gone)


async def test_an_operator_restart_mid_run_converges_and_bills_once(cluster):
    await cluster.stop_operator()
    await cluster.apply("steady", SPEC)  # created while no operator runs
    cluster.start_operator()
    await cluster.until(lambda: cluster.has_job("steady-prepare"))
    await cluster.stop_operator()
    cluster.start_operator()  # restarted while preparing: no second prepare Job
    await asyncio.sleep(1.0)
    await cluster.stop_operator()
    await finish(cluster, "steady-prepare", True, {"outcome": "Succeeded"})  # while it is down
    cluster.start_operator()
    await cluster.until(lambda: cluster.has_job("steady-train"))
    await cluster.stop_operator()
    await finish(cluster, "steady-train", True, {"outcome": "Succeeded", "stepsCompleted": 2000})
    cluster.start_operator()
    training = await cluster.until(lambda: cluster.phase("steady", "Succeeded"))
    billing = training["status"]["billing"]
    await cluster.stop_operator()
    cluster.start_operator()  # every Job event is replayed to the new operator
    await asyncio.sleep(1.5)
    training = await cluster.training("steady")
    assert training["status"]["billing"] == billing and billing["units"] == 2000
    assert set(await cluster.jobs()) == {"steady-prepare", "steady-train"}
    assert (await cluster.event_reasons("steady", "Billed")).count("Billed") == 1


async def test_the_operator_leaves_spec_and_metadata_to_their_owners(cluster):
    """Argo CD and Flux compare spec, labels and annotations: the operator adds only its
    finalizer and annotations under its own prefix, and writes the status."""
    labels = {"app.kubernetes.io/part-of": "videos", "kueue.x-k8s.io/queue-name": "gpus"}
    await cluster.apply("synced", SPEC, labels=labels)
    await cluster.until(lambda: cluster.has_job("synced-prepare"))
    await finish(cluster, "synced-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: cluster.has_job("synced-train"))
    await finish(cluster, "synced-train", True, {"outcome": "Succeeded", "stepsCompleted": 100})
    training = await cluster.until(lambda: cluster.phase("synced", "Succeeded"))
    assert training["spec"] == SPEC
    meta = training["metadata"]
    assert meta["labels"] == labels
    assert meta["generation"] == 1  # the spec was never written
    assert set(meta.get("finalizers") or []) <= {"ltx-training.io/finalizer"}
    assert all(key.startswith("ltx-training.io/") for key in meta.get("annotations") or {})


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
    await cluster.until(lambda: cluster.has_job("counted-prepare"))
    await finish(cluster, "counted-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: cluster.has_job("counted-train"))
    await finish(cluster, "counted-train", True, {"outcome": "Succeeded", "stepsCompleted": 2000})
    await cluster.until(lambda: cluster.phase("counted", "Succeeded"))

    async def gauge_caught_up() -> bool:  # the phase gauge follows the watch, a beat later
        return metrics.PHASES.get((NAMESPACE, "counted")) == "Succeeded"
    await cluster.until(gauge_caught_up)
    after = scrape(port)

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert delta("ltx_operator_jobs_created_total[('stage', 'train')]") == 1
    assert delta("ltx_operator_billable_units_total[]") == 2000
    assert delta("ltx_operator_outcomes_total[('reason', 'Succeeded')]") == 1
    assert after["ltx_operator_resources[('phase', 'Succeeded')]"] >= 1
    assert delta("ltx_operator_time_to_finish_seconds_count[('outcome', 'Succeeded')]") == 1
    assert delta("ltx_operator_time_to_train_job_seconds_count[]") == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_deleting_a_running_training_stops_its_jobs_and_bills_nothing(cluster):
    await cluster.apply("gone", SPEC)
    await cluster.until(lambda: cluster.has_job("gone-prepare"))
    await finish(cluster, "gone-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: cluster.has_job("gone-train"))
    await cluster.until(lambda: cluster.phase("gone", "Training"))
    training = await cluster.training("gone")
    assert "ltx-training.io/finalizer" in training["metadata"].get("finalizers", [])
    assert "billing" not in training["status"]
    await cluster.request("DELETE", f"{TRAININGS}/gone")

    async def cleaned() -> bool:
        listed = await cluster.request("GET", TRAININGS)
        return not await cluster.jobs() and not listed.get("items")

    await cluster.until(cleaned)

