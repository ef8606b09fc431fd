"""The operator running for real against kmock; the test plays kubelet and Job
controller over HTTP, as a cluster would."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import kmock
import pytest

from ltx_operator import handlers
from ltx_trainer.progress import ProgressServer, ProgressState

from harness import kube_api
from harness.operator_cluster import JOBS, NAMESPACE, OPERATOR_TOKEN, PODS, TRAININGS, Cluster

CREATE, UPDATE = kmock.action.CREATE, kmock.action.UPDATE

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


async def start_pod(cluster: Cluster, job: str, name: str,
                    status: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Job controller's pod: the template's labels and `job-name`; with `status`,
    what the scheduler and the kubelet report of it."""
    template = (await cluster.request("GET", f"{JOBS}/{job}"))["spec"]["template"]
    pod = await cluster.create(PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team",
                     "labels": {**template["metadata"]["labels"], "job-name": job}}})
    if status is not None:
        await pod_status(cluster, name, status)
    return pod


async def pod_status(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    await cluster.request("PATCH", f"{PODS}/{name}/status", {"status": status})


RUNNING = {"phase": "Running", "podIP": "127.0.0.1"}


async def condition(cluster: Cluster, name: str, type_: str, reason: str) -> dict[str, Any]:
    """The training once its `type_` condition has `reason`."""
    async def reached() -> dict | None:
        training = await cluster.training(name)
        found = next((c for c in (training.get("status") or {}).get("conditions") or []
                      if c["type"] == type_), None)
        return training if found and found["reason"] == reason else None
    return await cluster.until(reached)


SPEC = {"trainingDataUrl": "s3://datasets/clips.zip", "numberOfSteps": 2000, "gpus": 2,
        "nodeSelector": {"gpu": "h100"}, "priorityClassName": "training",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


async def test_a_training_from_apply_to_billed_success(cluster):
    await cluster.apply("door", SPEC, labels={"kueue.x-k8s.io/queue-name": "gpus",
                                              "kueue.x-k8s.io/priority-class": "batch-high"})
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
    assert prepare["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "batch-high"
    training = await condition(cluster, "door", "Running", "JobPending")
    assert training["status"]["phase"] == "Pending"  # the Job exists, its pod does not run
    await start_pod(cluster, "door-prepare", "door-prepare-abcde", RUNNING)
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
    assert rules[0]["onExitCodes"]["values"] == [2, 3, 4]
    await start_pod(cluster, "door-train", "door-train-abcde", RUNNING)
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
        await start_pod(cluster, "live-train", "live-train-abcde", RUNNING)
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
    await start_pod(cluster, "pause-prepare", "pause-prepare-abcde", RUNNING)
    await cluster.until(lambda: cluster.phase("pause", "Preparing"))
    await cluster.request("PATCH", f"{TRAININGS}/pause", {"spec": {"suspend": True}})
    training = await cluster.until(lambda: cluster.phase("pause", "Suspended"))
    assert (await cluster.jobs())["pause-prepare"]["spec"]["suspend"] is True
    assert any(c["type"] == "Suspended" and c["status"] == "True"
               for c in training["status"]["conditions"])
    await cluster.request("PATCH", f"{TRAININGS}/pause", {"spec": {"suspend": False}})
    training = await condition(cluster, "pause", "Suspended", "Resumed")
    assert training["status"]["phase"] == "Preparing"
    assert (await cluster.jobs())["pause-prepare"]["spec"]["suspend"] is False
    assert (await cluster.event_reasons("pause", "Suspended", "Resumed")).count("Resumed") == 1


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
    await start_pod(cluster, "gone-train", "gone-train-abcde", RUNNING)
    await cluster.until(lambda: cluster.phase("gone", "Training"))
    training = await cluster.training("gone")
    assert "ltx-training.io/finalizer" in training["metadata"].get("finalizers", [])
    assert "billing" not in training["status"]
    await cluster.request("DELETE", f"{TRAININGS}/gone")

    async def cleaned() -> bool:
        listed = await cluster.request("GET", TRAININGS)
        return not await cluster.jobs() and not listed.get("items")

    await cluster.until(cleaned)



async def test_a_training_without_a_model_fails_at_once_with_no_job(cluster):
    handlers.configure(handlers.current().model_copy(update={"model_claim_name": None}))
    await cluster.apply("modelless", SPEC)
    training = await cluster.until(lambda: cluster.phase("modelless", "Failed"))
    failed = next(c for c in training["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NoBaseModel" and "model.claimName" in failed["message"]
    assert training["status"]["billing"]["units"] == 0
    assert "NoBaseModel" in await cluster.event_reasons("modelless", "NoBaseModel")
    await asyncio.sleep(0.5)
    assert await cluster.jobs() == {}  # no GPU, not even the prepare Job


async def test_a_stage_that_waits_says_why(cluster):
    await cluster.apply("wait", SPEC)
    await cluster.until(lambda: cluster.has_job("wait-prepare"))
    scheduler = "0/3 nodes are available: 3 Insufficient cpu. preemption: not helpful."
    await start_pod(cluster, "wait-prepare", "wait-prepare-a", {
        "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                            "reason": "Unschedulable", "message": scheduler}]})
    training = await condition(cluster, "wait", "Running", "Unschedulable")
    running = next(c for c in training["status"]["conditions"] if c["type"] == "Running")
    assert training["status"]["phase"] == "Pending" and running["message"] == scheduler
    pulling = "Back-off pulling image \"ghcr.io/ltx-extend/trainer:0.1.0\""
    await pod_status(cluster, "wait-prepare-a", {
        "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0,
                               "image": "t", "imageID": "", "state": {"waiting": {
                                   "reason": "ImagePullBackOff", "message": pulling}}}]})
    await condition(cluster, "wait", "Running", "ImagePullBackOff")
    await pod_status(cluster, "wait-prepare-a", {**RUNNING, "containerStatuses": [{
        "name": "trainer", "ready": True, "restartCount": 0, "image": "t", "imageID": "",
        "state": {"running": {}}}]})
    await cluster.until(lambda: cluster.phase("wait", "Preparing"))
    events = {e["reason"]: e for e in await cluster.events("wait")}
    assert events["Unschedulable"]["type"] == "Warning"
    assert events["Unschedulable"]["message"] == scheduler
    assert "ImagePullBackOff" in await cluster.event_reasons("wait", "ImagePullBackOff")


class KueueStandIn:
    """Kueue as a Job sees it: its webhook creates queued Jobs suspended, its controller
    makes a Workload per Job, unsuspends a Job once admitted and suspends it again
    when its Workload is deactivated (evicted)."""

    WORKLOADS = f"/apis/kueue.x-k8s.io/v1beta1/namespaces/{NAMESPACE}/workloads"

    def __init__(self, cluster: Cluster, emulator: Any):
        self.cluster, self.admitted = cluster, set()
        emulator.admission.append(self.webhook)

    @staticmethod
    def webhook(request: Any) -> None:
        labels = ((request.data or {}).get("metadata") or {}).get("labels") or {} \
            if isinstance(request.data, dict) else {}
        if request.resource is not None and request.resource.plural == "jobs" \
                and request.action == CREATE and "kueue.x-k8s.io/queue-name" in labels:
            request.data["spec"]["suspend"] = True

    async def sync(self) -> None:
        workloads = {w["metadata"]["labels"]["kueue.x-k8s.io/job-uid"]: w for w in
                     (await self.cluster.request("GET", self.WORKLOADS)).get("items", [])}
        for name, job in (await self.cluster.jobs()).items():
            uid = job["metadata"]["uid"]
            if uid not in workloads:  # one pod set of `parallelism` pods: admitted whole
                template = job["spec"]["template"]
                workloads[uid] = await self.cluster.create(self.WORKLOADS, {
                    "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload",
                    "metadata": {"name": f"job-{name}", "namespace": NAMESPACE,
                                 "labels": {"kueue.x-k8s.io/job-uid": uid}},
                    "spec": {"active": True, "queueName": "gpus", "podSets": [{
                        "name": "main", "count": job["spec"].get("parallelism", 1),
                        "template": template}]}})
            admit = name in self.admitted and workloads[uid]["spec"].get("active", True)
            if job["spec"].get("suspend") == admit:
                await self.cluster.request("PATCH", f"{JOBS}/{name}",
                                           {"spec": {"suspend": not admit}})

    async def admit(self, job: str) -> None:
        self.admitted.add(job)
        await self.sync()


async def test_kueue_admits_each_stage_and_suspends_through_the_workload(cluster, api_server):
    emulator, _ = api_server
    kueue = KueueStandIn(cluster, emulator)
    operator_patches: list[str] = []
    emulator.admission.append(lambda r: operator_patches.append(r.name) if (
        r.resource is not None and r.resource.plural == "jobs" and r.action == UPDATE
        and kube_api.bearer(r) == OPERATOR_TOKEN) else None)
    await cluster.apply("queued", SPEC, labels={"kueue.x-k8s.io/queue-name": "gpus"})
    await cluster.until(lambda: cluster.has_job("queued-prepare"))
    await kueue.sync()
    training = await condition(cluster, "queued", "Running", "Queued")
    assert training["status"]["phase"] == "Pending"
    assert "Queued" in await cluster.event_reasons("queued", "Queued")
    await kueue.admit("queued-prepare")
    await start_pod(cluster, "queued-prepare", "queued-prepare-a", RUNNING)
    await cluster.until(lambda: cluster.phase("queued", "Preparing"))

    await cluster.request("PATCH", f"{TRAININGS}/queued", {"spec": {"suspend": True}})
    await cluster.until(lambda: cluster.phase("queued", "Suspended"))
    workload = await cluster.request("GET", f"{KueueStandIn.WORKLOADS}/job-queued-prepare")
    assert workload["spec"]["active"] is False  # Kueue's own way to stop a Job
    await kueue.sync()
    assert (await cluster.jobs())["queued-prepare"]["spec"]["suspend"] is True
    await cluster.request("PATCH", f"{TRAININGS}/queued", {"spec": {"suspend": False}})
    await condition(cluster, "queued", "Suspended", "Resumed")
    workload = await cluster.request("GET", f"{KueueStandIn.WORKLOADS}/job-queued-prepare")
    assert workload["spec"]["active"] is True
    await kueue.sync()
    assert (await cluster.jobs())["queued-prepare"]["spec"]["suspend"] is False

    await finish(cluster, "queued-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: cluster.has_job("queued-train"))  # admitted in order
    await kueue.sync()
    await condition(cluster, "queued", "Running", "Queued")
    await kueue.admit("queued-train")
    await finish(cluster, "queued-train", True, {"outcome": "Succeeded", "stepsCompleted": 100})
    training = await cluster.until(lambda: cluster.phase("queued", "Succeeded"))
    assert training["status"]["billing"]["units"] == 100
    assert operator_patches == []  # the Jobs' suspend field is Kueue's alone


@pytest.mark.parametrize(("code", "reason", "message", "condition_reason"), [
    (403, "Forbidden", 'jobs.batch "refused-prepare" is forbidden: exceeded quota: '
     "team-quota, requested: count/jobs.batch=1, used: count/jobs.batch=8, limited: "
     "count/jobs.batch=8", "QuotaExceeded"),
    (403, "Forbidden", 'admission webhook "validate.kyverno.svc-fail" denied the request: '
     "resource Job/team/refused-prepare was blocked: images must come from registry.corp",
     "JobRefused"),
])
async def test_a_refused_job_is_retried_with_a_growing_delay_and_says_why(
        cluster, api_server, code, reason, message, condition_reason):
    emulator, _ = api_server
    handlers.configure(handlers.current().model_copy(update={"job_retry_delay": 0.3}))
    attempts: list[float] = []
    refusing = [True]

    def refuse(request: Any) -> None:
        if request.resource is not None and request.resource.plural == "jobs" \
                and request.action == CREATE and refusing[0]:
            attempts.append(asyncio.get_running_loop().time())
            raise kmock.KubernetesError(status=code, reason=reason, message=message)

    emulator.admission.append(refuse)
    await cluster.apply("refused", SPEC)
    training = await condition(cluster, "refused", "JobCreated", condition_reason)
    created = next(c for c in training["status"]["conditions"] if c["type"] == "JobCreated")
    assert message in created["message"] and training["status"]["phase"] == "Pending"
    assert condition_reason in await cluster.event_reasons("refused", condition_reason)

    async def tried(n: int) -> bool:
        return len(attempts) >= n
    await cluster.until(lambda: tried(4))
    gaps = [b - a for a, b in itertools.pairwise(attempts[:4])]
    assert gaps[0] >= 0.25 and gaps[2] > gaps[0] * 2.5, gaps  # 0.3, 0.6, 1.2 s: no hot loop
    refusing[0] = False
    training = await condition(cluster, "refused", "JobCreated", "Created")
    assert training["status"]["phase"] == "Pending" and "retry" not in training["status"]
    assert set(await cluster.jobs()) == {"refused-prepare"}


async def test_an_overloaded_api_server_is_waited_out_without_a_refusal(cluster, api_server):
    """429 and 5xx on the Job's creation are the API server's trouble, not a refusal of the
    Job: tried again after its Retry-After, no JobRefused condition or Event."""
    emulator, _ = api_server
    handlers.configure(handlers.current().model_copy(update={"job_retry_delay": 0.2}))
    answers = [kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="busy"),
               kmock.KubernetesError(status=500, reason="InternalError", message="etcd")]

    def overloaded(request: Any) -> None:
        if request.resource is not None and request.resource.plural == "jobs" \
                and request.action == CREATE and answers:
            raise answers.pop(0)

    emulator.admission.append(overloaded)
    await cluster.apply("busy", SPEC)
    await cluster.until(lambda: cluster.has_job("busy-prepare"))
    training = await cluster.until(lambda: cluster.phase("busy", "Pending"))
    assert not answers and "retry" not in training["status"]
    assert "JobCreated" not in {c["type"] for c in training["status"].get("conditions", [])}
    assert not {"JobRefused", "QuotaExceeded"} & set(await cluster.event_reasons("busy"))


async def test_an_invalid_job_ends_failed_and_bills_nothing(cluster, api_server):
    emulator, _ = api_server
    message = ('Job.batch "rejected-prepare" is invalid: spec.template.spec.containers[0]'
               '.resources.requests: Invalid value: "8Gi": must be less than or equal to '
               'memory limit')

    def invalid(request: Any) -> None:
        if request.resource is not None and request.resource.plural == "jobs" \
                and request.action == CREATE:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=message)

    emulator.admission.append(invalid)
    await cluster.apply("rejected", SPEC)
    training = await cluster.until(lambda: cluster.phase("rejected", "Failed"))
    failed = next(c for c in training["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "JobRejected" and message in failed["message"]
    assert training["status"]["billing"]["units"] == 0 and await cluster.jobs() == {}


async def test_the_role_grants_what_the_operator_uses_and_no_more(cluster, api_server):
    """Every operator request is held to the chart's role (the fixture fails any test
    whose operator was refused); this run takes every path, and the role grants
    nothing it did not use — owner references count as a use of the Jobs' delete and
    the trainings' finalizers, as OwnerReferencesPermissionEnforcement checks them."""
    emulator, _ = api_server
    kueue = KueueStandIn(cluster, emulator)
    faults = {"status": 1, "create": 1}

    def another_writer(request: Any) -> None:  # the first writes meet a concurrent change
        if kube_api.bearer(request) != OPERATOR_TOKEN or request.resource is None:
            return
        if request.subresource == "status" and request.action == UPDATE and faults["status"]:
            faults["status"] -= 1
            raise kube_api.conflict("the object has been modified")
        if request.resource.plural == "jobs" and request.action == CREATE and faults["create"]:
            faults["create"] -= 1
            raise kmock.KubernetesError(status=409, reason="AlreadyExists",
                                        message='jobs.batch "plain-prepare" already exists')

    emulator.admission.append(another_writer)
    await cluster.apply("plain", {**SPEC, "nodes": 2, "ttlSecondsAfterFinished": 0})
    await cluster.until(lambda: cluster.has_job("plain-prepare"))
    await cluster.request("PATCH", f"{TRAININGS}/plain", {"spec": {"suspend": True}})
    await cluster.until(lambda: cluster.phase("plain", "Suspended"))
    await cluster.request("PATCH", f"{TRAININGS}/plain", {"spec": {"suspend": False}})
    await condition(cluster, "plain", "Suspended", "Resumed")
    await finish(cluster, "plain-prepare", True, {"outcome": "Succeeded"})
    await cluster.until(lambda: cluster.has_job("plain-train"))
    await finish(cluster, "plain-train", True, {"outcome": "Succeeded", "stepsCompleted": 100})

    await cluster.apply("queued", SPEC, labels={"kueue.x-k8s.io/queue-name": "gpus"})
    await cluster.until(lambda: cluster.has_job("queued-prepare"))
    await kueue.admit("queued-prepare")
    await cluster.request("PATCH", f"{TRAININGS}/queued", {"spec": {"suspend": True}})
    await cluster.until(lambda: cluster.phase("queued", "Suspended"))
    await cluster.request("DELETE", f"{TRAININGS}/queued")

    async def gone() -> bool:  # TTL deleted the one, the user the other: Jobs stopped
        listed = await cluster.request("GET", TRAININGS)
        return not listed.get("items") and "queued-prepare" not in await cluster.jobs() \
            and not await cluster.services()  # the gang's Service went with it
    await cluster.until(gone)
    assert faults == {"status": 0, "create": 0}
    assert emulator.rbac.used == emulator.rbac.granted(), (
        f"granted, never used: {sorted(emulator.rbac.granted() - emulator.rbac.used)}")


async def start_indexed_pod(cluster: Cluster, job: str, index: int, ip: str) -> str:
    """The Job controller's pod of one completion index, running."""
    name = f"{job}-{index}-{uuid.uuid4().hex[:5]}"
    template = (await cluster.request("GET", f"{JOBS}/{job}"))["spec"]["template"]
    await cluster.create(PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE,
                     "labels": {**template["metadata"]["labels"], "job-name": job,
                                "batch.kubernetes.io/job-completion-index": str(index)},
                     "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}}})
    await pod_status(cluster, name, {"phase": "Running", "podIP": ip})
    return name


async def end_pod(cluster: Cluster, name: str, code: int, message: str) -> None:
    await pod_status(cluster, name, {
        "phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [{
            "name": "trainer", "ready": False, "restartCount": 0, "image": "t", "imageID": "",
            "state": {"terminated": {"exitCode": code, "message": message,
                                     "reason": "Completed" if code == 0 else "Error"}}}]})


async def test_a_gang_on_two_nodes_is_one_indexed_job_behind_a_headless_service(
        cluster, api_server):
    """`nodes: 2, gpus: 2`: the Service first, then an Indexed Job of 2 that Kueue admits
    as one pod set of 2; progress and the result from index 0; billed once; the
    Service deleted with the training."""
    emulator, _ = api_server
    kueue = KueueStandIn(cluster, emulator)
    made: list[tuple[str, str]] = []  # (kind, name) of each create, in order
    emulator.admission.append(lambda r: made.append(
        (r.resource.plural, ((r.data or {}).get("metadata") or {}).get("name"))) if (
        r.resource is not None and r.action == CREATE and r.resource.plural in (
            "jobs", "services") and kube_api.bearer(r) == OPERATOR_TOKEN) else None)
    state = ProgressState()
    with ProgressServer(state, 0, host="127.0.0.1") as server:
        handlers.configure(handlers.current().model_copy(update={"progress_port": server.port}))
        await cluster.apply("gang", {**SPEC, "nodes": 2},
                            labels={"kueue.x-k8s.io/queue-name": "gpus"})
        await cluster.until(lambda: cluster.has_job("gang-prepare"))
        assert (await cluster.jobs())["gang-prepare"]["spec"].get("completionMode") is None
        await kueue.admit("gang-prepare")
        await finish(cluster, "gang-prepare", True, {"outcome": "Succeeded"})
        jobs = await cluster.until(lambda: cluster.has_job("gang-train"))
        # the Service before its Job (a create may be repeated: the second meets a 409)
        assert made.index(("services", "gang-train")) < made.index(("jobs", "gang-train"))
        train = jobs["gang-train"]
        assert (train["spec"]["completionMode"], train["spec"]["completions"],
                train["spec"]["parallelism"]) == ("Indexed", 2, 2)
        (service,) = (await cluster.services()).values()
        assert service["metadata"]["name"] == train["spec"]["template"]["spec"]["subdomain"]
        assert service["metadata"]["ownerReferences"][0]["name"] == "gang"
        assert service["spec"]["clusterIP"] == "None"
        await kueue.sync()
        workload = await cluster.request("GET", f"{KueueStandIn.WORKLOADS}/job-gang-train")
        assert workload["spec"]["podSets"][0]["count"] == 2  # all the pods or none
        await condition(cluster, "gang", "Running", "Queued")
        await kueue.admit("gang-train")
        assert (await cluster.jobs())["gang-train"]["spec"]["suspend"] is False
        # rank 0's /progress is on 127.0.0.1; the other node's address serves nothing
        worker = await start_indexed_pod(cluster, "gang-train", 1, "127.0.0.2")
        leader = await start_indexed_pod(cluster, "gang-train", 0, "127.0.0.1")
        state.stage("training")
        state.step(700, 2000, 0.3, 2.0, 600.0)

        async def progressed() -> dict | None:
            progress = ((await cluster.training("gang")).get("status") or {}).get(
                "progress") or {}
            return progress if progress.get("step") == 700 else None

        await cluster.until(progressed)
        await end_pod(cluster, worker, 0, json.dumps({"stage": "train", "worker": True,
                                                      "node": 1}))
        await end_pod(cluster, leader, 0, json.dumps({
            "outcome": "Succeeded", "stepsCompleted": 2000,
            "artifacts": {"loraFile": "s3://runs/team/gang/x/outputs/lora.safetensors"}}))
        await cluster.request("PATCH", f"{JOBS}/gang-train/status", {"status": {
            "succeeded": 2, "completedIndexes": "0,1", "conditions": [
                {"type": "Complete", "status": "True", "reason": "Completed"}]}})
        training = await cluster.until(lambda: cluster.phase("gang", "Succeeded"))
    assert training["status"]["billing"]["units"] == 2000
    assert training["status"]["artifacts"]["loraFile"].endswith("lora.safetensors")
    assert (await cluster.event_reasons("gang", "Billed")).count("Billed") == 1
    await cluster.request("DELETE", f"{TRAININGS}/gang")

    async def cleaned() -> bool:
        return not await cluster.jobs() and not await cluster.services()

    await cluster.until(cleaned)
