"""Trainings on many nodes: the kubelet-playing harness runs an Indexed Job's pods the way
a cluster does (one pod per index, hostnames, the headless Service's names resolving to
each pod's own address), and a 2-node training goes from apply to a loaded LoRA with its
two train pods as two local processes that meet at rank 0's rendezvous."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from test_e2e import (  # noqa: F401  (fixtures)
    DEADLINE,
    IMAGE,
    NODE_SELECTOR,
    STORE_SECRET,
    TRAINER_ARGS,
    _free_port,
    assert_succeeded,
    e2e_media,
    finished,
    kubelet,
    spec,
    until_checkpointed,
)

from ltx_contract.result import JobResult
from ltx_operator.settings import OperatorSettings

from harness.kubelet import NodeKubelet
from harness.operator_cluster import JOBS, NAMESPACE, PODS, SERVICES, TRAININGS, Cluster

pytestmark = pytest.mark.asyncio
PYTHON = "harness/python"
#: a finished Job's conditions, as the Job controller writes them (1.31+)
COMPLETE = {"SuccessCriteriaMet", "Complete"}

#: Index 0 listens; index 1 finds it by its Service name and sends what it knows of itself.
MEET = textwrap.dedent("""
    import os, socket, sys, time
    index = int(os.environ["JOB_COMPLETION_INDEX"])
    assert os.environ["NODE_RANK"] == str(index), os.environ["NODE_RANK"]
    port = int(os.environ["PORT"])
    if index == 0:
        server = socket.socket()
        server.bind(("0.0.0.0", port))
        server.listen()
        connection, peer = server.accept()
        print("served on", server.getsockname()[0], "to", peer[0], "got",
              connection.recv(200).decode())
    else:
        address = socket.gethostbyname(os.environ["LEADER"])
        for _ in range(100):
            try:
                client = socket.create_connection((address, port), timeout=2)
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        client.sendall(f"{socket.gethostname()} {socket.getfqdn()}".encode())
        print("reached", address)
""")


def indexed_job(name: str, script: str, completions: int = 2, **env: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"completionMode": "Indexed", "completions": completions,
                     "parallelism": completions, "backoffLimit": 2,
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "restartPolicy": "Never", "subdomain": name,
                         "containers": [{"name": "main", "image": PYTHON, "args": [script],
                                         "env": [{"name": "NODE_RANK", "valueFrom": {
                                             "fieldRef": {"fieldPath": "metadata.annotations["
                                                          "'batch.kubernetes.io/job-completion-"
                                                          "index']"}}},
                                             *({"name": k, "value": v}
                                               for k, v in env.items())]}]}}}}


def headless(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {"app": name}}}


@pytest_asyncio.fixture
async def cluster(real_cluster: Cluster) -> Cluster:
    """The trainings here run on the real control plane."""
    return real_cluster


@pytest_asyncio.fixture
async def node(real_client: Cluster, tmp_path: Path) -> AsyncIterator[tuple[Cluster, NodeKubelet]]:
    """The real control plane, with no operator, and this machine as its node."""
    (tmp_path / "marks").mkdir()
    async with NodeKubelet(real_client, {PYTHON: [sys.executable, "-c"]},
                           {"marks": tmp_path / "marks"}, tmp_path / "node",
                           interval=0.05) as harness:
        yield real_client, harness
        assert not harness.errors, harness.errors


async def job_finished(cluster: Cluster, name: str) -> dict[str, Any]:
    async def done() -> dict | None:
        status = (await cluster.jobs())[name].get("status") or {}
        types = {c["type"] for c in status.get("conditions") or []}
        return status if types & {"Complete", "Failed"} else None
    return await cluster.until(done, timeout=30)


async def test_the_pods_of_an_indexed_job_reach_index_0_by_its_service_name(node):
    cluster, harness = node
    port = _free_port()
    await cluster.create(SERVICES, headless("meet"))
    await cluster.create(JOBS, indexed_job("meet", MEET, PORT=str(port),
                                           LEADER="meet-0.meet"))
    status = await job_finished(cluster, "meet")
    pods = {p.index: p for p in harness.pods("meet")}
    assert set(pods) == {0, 1}, [p.log() for p in harness.pods("meet")]
    assert COMPLETE == {c["type"] for c in status["conditions"]}, [
        p.log() for p in pods.values()]
    assert (status["succeeded"], status["completedIndexes"]) == (2, "0,1")
    leader, worker = pods[0], pods[1]
    assert leader.ip != worker.ip
    assert f"reached {leader.ip}" in worker.log()
    # served on pod 0's own address to pod 1, which knows itself by its pod names
    assert f"served on {leader.ip} to " in leader.log()
    assert f"got meet-1 meet-1.meet.{NAMESPACE}.svc.cluster.local" in leader.log()
    stored = await cluster.request("GET", f"{PODS}/{worker.name}")
    assert stored["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"
    assert stored["spec"]["hostname"] == "meet-1"


async def test_without_the_service_a_pod_knows_only_its_own_name(node):
    cluster, harness = node
    script = textwrap.dedent("""
        import os, socket
        print(socket.gethostbyname(os.environ["OWN"]))
        try:
            socket.gethostbyname(os.environ["PEER"])
        except socket.gaierror:
            print("no such peer")
    """)
    await cluster.create(JOBS, indexed_job("alone", script, completions=1,
                                           OWN="alone-0.alone", PEER="alone-1.alone"))
    await job_finished(cluster, "alone")
    (pod,) = harness.pods("alone")
    assert pod.log().split() == [pod.ip, "no", "such", "peer"]


async def test_a_failed_index_is_replaced_at_its_index_and_address(node):
    cluster, harness = node
    script = textwrap.dedent("""
        import os, pathlib, sys
        mark = pathlib.Path(os.environ["MARK"])
        if os.environ["JOB_COMPLETION_INDEX"] == "1" and not mark.exists():
            mark.write_text("failed once")
            sys.exit(1)
    """)
    job = indexed_job("flaky", script, MARK="/marks/failed-once")  # a volume both share
    job["spec"]["template"]["spec"]["volumes"] = [
        {"name": "marks", "persistentVolumeClaim": {"claimName": "marks"}}]
    job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "marks", "mountPath": "/marks"}]
    await cluster.create(JOBS, job)
    status = await job_finished(cluster, "flaky")
    assert {c["type"] for c in status["conditions"]} == COMPLETE
    assert (status["failed"], status["succeeded"]) == (1, 2)
    ones = [p for p in harness.pods("flaky") if p.index == 1]
    assert [p.process.returncode for p in ones] == [1, 0]
    assert ones[0].ip == ones[1].ip  # the replacement answers to the same name


async def test_a_fail_job_exit_of_one_index_stops_the_others(node):
    cluster, harness = node
    script = ("import os, sys, time\n"
              "sys.exit(3) if os.environ['JOB_COMPLETION_INDEX'] == '1' else time.sleep(60)")
    job = indexed_job("doomed", script)
    job["spec"]["podFailurePolicy"] = {"rules": [{"action": "FailJob", "onExitCodes": {
        "operator": "In", "values": [3]}}]}
    await cluster.create(JOBS, job)
    status = await job_finished(cluster, "doomed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    await asyncio.sleep(0.3)
    assert not [p for p in harness.pods("doomed") if p.process.returncode is None]


#: Each rank adds its rank into one sum over gloo; rank 0 says what the group made.
RANKS = textwrap.dedent("""
    import os, socket
    import torch
    import torch.distributed as dist
    dist.init_process_group("gloo")
    total = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(total)
    # one write per line: the ranks of a pod share its log, a print may be two writes
    os.write(1, (f"rank {dist.get_rank()} of {dist.get_world_size()} on "
                 f"{socket.gethostname()}: sum {int(total.item())}\\n").encode())
    dist.destroy_process_group()
""")


async def test_the_operators_gang_meets_at_rank_0s_rendezvous_through_torchrun(node):
    """The train Job and Service the operator makes for `nodes: 2, gpus: 2`, their pods
    running torchrun itself (which reads the `PET_*` variables): four ranks on two pods
    meet at `<job>-0.<service>` and sum over gloo."""
    from ltx_contract.spec import parse_spec
    from ltx_operator.jobs import build_job, build_service

    cluster, harness = node
    script = harness.root / "ranks.py"
    harness.root.mkdir(parents=True, exist_ok=True)
    script.write_text(RANKS)
    harness.images["harness/torchrun"] = [sys.executable, "-m", "torch.distributed.run",
                                          str(script)]
    settings = OperatorSettings(model_url="s3://models/tiny", store_secret=None,
                                trainer_image="harness/torchrun", rendezvous_port=_free_port(),
                                train_shm_size="")
    # the owner the Job and Service name (the garbage collector deletes an orphan)
    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 2, "nodes": 2})
    await cluster.apply("door", {"trainingDataUrl": "s3://d/c.zip", "gpus": 2, "nodes": 2})
    body = await cluster.training("door")
    await cluster.create(SERVICES, build_service(body, settings))
    await cluster.create(JOBS, build_job("train", body, spec, settings))
    status = await job_finished(cluster, "door-train")
    logs = {(p.index, p.name): p.log() for p in harness.pods("door-train")}
    assert {c["type"] for c in status["conditions"]} == COMPLETE, logs
    lines = sorted(line.split("] ")[-1] for log in logs.values() for line in log.splitlines()
                   if "sum" in line)
    assert lines == [f"rank {r} of 4 on door-train-{r // 2}: sum 6" for r in range(4)], logs


@pytest.fixture
def operator_settings() -> OperatorSettings:
    """The e2e platform (see test_e2e), with a rendezvous port free on this machine."""
    return OperatorSettings(store_url="s3://runs/trainings", store_secret=STORE_SECRET,
                            model_claim_name="models", trainer_image=IMAGE,
                            progress_port=_free_port(), rendezvous_port=_free_port(),
                            metrics_port=0, trainer_args=TRAINER_ARGS, prepare_cpu="1",
                            train_cpu="1", prepare_node_selector=NODE_SELECTOR,
                            train_node_selector=NODE_SELECTOR,
                            # both "nodes" share this machine's cores: one thread each
                            trainer_env=[{"name": "OMP_NUM_THREADS", "value": "1"}])


@pytest.mark.e2e
async def test_a_training_on_two_nodes_succeeds_and_bills_once(
        cluster, kubelet, s3_server, tiny_model, tmp_path):  # noqa: F811 (the fixture)
    """Two nodes of one rank each: the train Job's two pods run the trainer image's
    command as two processes; rank 0's pod reports the result, the other a worker's
    short message; the Service goes with the training."""
    await cluster.apply("gang", spec("clips.zip", closing=1, with_audio=False, nodes=2))
    training = await finished(cluster, "gang", kubelet)
    await assert_succeeded(cluster, "gang", training, s3_server, tiny_model, tmp_path,
                           audio=False, reel_clips=1)
    pods = {p.index: p for p in kubelet.pods("gang-train")}
    assert sorted(p.index for p in kubelet.pods("gang-train")) == [0, 1]  # none replaced
    assert [pods[i].process.returncode for i in (0, 1)] == [0, 0]
    worker = pods[1].root.joinpath("termination-log").read_text()
    assert JobResult.from_termination_message(worker) is None, worker  # rank 0 alone reports
    assert json.loads(worker).get("worker") is True, worker
    result = json.loads(pods[0].root.joinpath("termination-log").read_text())
    assert result["outcome"] == "Succeeded" and result["stepsCompleted"] == 100
    job = (await cluster.jobs())["gang-train"]
    assert job["status"]["completedIndexes"] == "0,1"
    assert "gang-train" in await cluster.services()
    await cluster.request("DELETE", f"{TRAININGS}/gang")

    async def cleaned() -> bool:
        return not await cluster.jobs() and not await cluster.services()

    await cluster.until(cleaned)



@pytest.mark.e2e
async def test_a_lost_node_restarts_the_gang_from_its_checkpoint_and_preemption_is_free(
        cluster, kubelet, s3_server, tiny_model, tmp_path):  # noqa: F811 (the fixture)
    """Node 1's pod dies after the first checkpoint (no condition: a crash, a lost node):
    its Job fails at once, the operator deletes it with its pods and starts the gang again
    as a new Job, whose pods meet at a fresh rendezvous and go on from the checkpoint
    (one restart counted). Then the new leader is preempted: the gang starts again, not
    counted. Succeeded, billed once."""
    await cluster.apply("lost", spec("clips.zip", closing=1, with_audio=False, nodes=2))
    await until_checkpointed(cluster, s3_server, "lost")
    first = (await cluster.jobs())["lost-train"]["metadata"]["uid"]
    lost = await kubelet.kill("lost-train", index=1)

    async def resumed() -> str | None:
        job = (await cluster.jobs()).get("lost-train")
        if job is None or job["metadata"]["uid"] == first:
            return None
        leaders = [p for p in kubelet.pods("lost-train")
                   if p.job_uid == job["metadata"]["uid"] and p.index == 0]
        return job["metadata"]["uid"] if leaders and "resumed from step-000040" in \
            leaders[-1].log() else None

    second = await cluster.until(resumed, timeout=DEADLINE)
    restarts = (await cluster.training("lost"))["status"]["restarts"]
    assert (restarts["failures"], restarts["disruptions"]) == (1, 0), restarts
    assert restarts["lastReason"].startswith(f"pod {lost.name} failed (exit code 137); the 2 "
                                             "pods start again"), restarts
    await kubelet.preempt("lost-train", index=0)
    training = await finished(cluster, "lost", kubelet)
    await assert_succeeded(cluster, "lost", training, s3_server, tiny_model, tmp_path,
                           audio=False, reel_clips=1)
    restarts = training["status"]["restarts"]
    assert (restarts["failures"], restarts["disruptions"]) == (1, 1), restarts
    assert restarts["lastReason"].endswith("(not counted)") and "replacing" not in restarts
    by_job: dict[str, list[int]] = {}
    for pod in kubelet.pods("lost-train"):
        by_job.setdefault(pod.job_uid, []).append(pod.index)
    assert list(by_job.values()) == [[0, 1]] * 3, by_job  # three gangs of two, none patched
    (third,) = set(by_job) - {first, second}
    final = [p for p in kubelet.pods("lost-train") if p.job_uid == third]
    assert [p.process.returncode for p in final] == [0, 0]
    assert all(p.process.returncode is not None for p in kubelet.pods("lost-train"))
    assert "resumed from step-0000" in final[0].log(), final[0].log()[-3000:]
    job = (await cluster.jobs())["lost-train"]
    assert job["metadata"]["uid"] == third and job["status"]["completedIndexes"] == "0,1"
    reasons = [e["reason"] for e in await cluster.events("lost")]
    assert reasons.count("GangRestarted") == 2, reasons
