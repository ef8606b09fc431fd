"""The harness's fault injectors: the kubelet's full disk, kill and node pod cap (on the
real control plane), and the S3 outage proxy (the emulated API server's own faults are
in test_kube_api; the real one's at the end of test_e2e)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from soak_faults import FaultPlan, S3Outage

from harness.kubelet import Kubelet, NodeKubelet
from harness.operator_cluster import JOBS, Cluster

SHELL = "harness/shell"


def job(name: str, script: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "work", "emptyDir": {}}],
                "containers": [{"name": "main", "image": SHELL, "args": [script],
                                "env": [{"name": "WORK", "value": "/work"}],
                                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]}}}}


async def ended(kubelet: Kubelet, name: str) -> int:
    for _ in range(200):
        pods = kubelet.pods(name)
        if pods and pods[-1].process.returncode is not None:
            return pods[-1].process.returncode
        await asyncio.sleep(0.05)
    raise AssertionError(f"the pod of {name} did not end")


@pytest_asyncio.fixture
async def node(real_client: Cluster, tmp_path):
    """The real control plane's Job controller, and this machine as a node of one pod."""
    async with NodeKubelet(real_client, {SHELL: ["sh", "-c"]}, {}, tmp_path / "node",
                           interval=0.05, max_pods=1) as kubelet:
        yield real_client, kubelet
        assert not kubelet.errors, kubelet.errors


@pytest.mark.asyncio
async def test_a_capped_work_volume_fills_up(node):
    cluster, kubelet = node
    write = 'head -c 3000000 /dev/zero > "$WORK/big" && echo written'
    kubelet.disk_limits["capped"] = 2**20
    await cluster.create(JOBS, job("capped", write))
    assert await ended(kubelet, "capped") != 0
    assert "No space left on device" in kubelet.pods("capped")[0].log()
    await cluster.create(JOBS, job("roomy", write))  # the same write, no cap
    assert await ended(kubelet, "roomy") == 0
    assert (kubelet.pods("roomy")[0].root / "volumes" / "work" / "big").stat().st_size \
        == 3000000


@pytest.mark.asyncio
async def test_kill_ends_a_pod_with_no_disruption_and_the_node_runs_one_pod(node):
    cluster, kubelet = node
    await cluster.create(JOBS, job("first", "sleep 30"))
    await cluster.create(JOBS, job("second", "true"))
    for _ in range(100):
        if kubelet.pods("first"):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert kubelet.pods("second") == []  # waits for the node's one slot
    pod = await kubelet.kill("first")
    assert pod.process.returncode == -9 and not pod.disrupted
    assert await ended(kubelet, "second") == 0

    async def failed() -> dict | None:
        status = (await cluster.jobs())["first"].get("status") or {}
        return status if status.get("failed") == 1 else None

    await cluster.until(failed, timeout=10)


@pytest.mark.asyncio
async def test_an_s3_outage_begins_at_the_chosen_request_and_ends(s3_server, tmp_path):
    from ltx_trainer.s3 import client_from_env
    from ltx_trainer.store import S3Store

    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    asked = []

    def trigger(method: str, path: str) -> float | None:
        asked.append((method, path.split("?")[0]))
        return 2.0 if method == "PUT" and "/outage/" in path and len(asked) < 50 \
            and not proxy.outages else None

    proxy = S3Outage((host, int(port)), trigger)
    await proxy.start()
    client = client_from_env({**s3_server.env, "AWS_ENDPOINT_URL":
                              f"http://127.0.0.1:{proxy.port}"})
    # the proxy runs on this loop: every client call goes from a thread
    if not await asyncio.to_thread(client.bucket_exists, "faults"):
        await asyncio.to_thread(client.make_bucket, "faults")
    store = S3Store("faults", "", client)
    local = tmp_path / "file.bin"
    local.write_bytes(b"x" * 100_000)
    down = []

    async def watch() -> None:
        while not proxy.outages:
            await asyncio.sleep(0.01)
        down.append(proxy.down)

    watcher = asyncio.ensure_future(watch())
    started = asyncio.get_running_loop().time()
    await asyncio.to_thread(store.put_file, local, "outage/file.bin")
    took = asyncio.get_running_loop().time() - started
    await watcher
    assert proxy.outages == [("/faults/outage/file.bin", 2.0)] and down == [True]
    assert took >= 2.0  # the upload waited the outage out, then went through whole
    got = tmp_path / "back.bin"
    assert await asyncio.to_thread(store.get_file, "outage/file.bin", got)
    assert got.read_bytes() == local.read_bytes()
    await proxy.stop()


def test_the_fault_plan_gives_every_kind_to_a_few_trainings_from_the_seed():
    names = [f"t{i}" for i in range(50)]
    plan = FaultPlan(names, seed=4)
    assert all(len(chosen) >= 5 for chosen in plan.chosen.values())
    assert not plan.chosen["disk_full"] & set().union(
        *(c for k, c in plan.chosen.items() if k != "disk_full"))
    assert plan.chosen == FaultPlan(names, seed=4).chosen != FaultPlan(names, seed=5).chosen
    small = FaultPlan(names[:4], seed=1)
    assert all(len(chosen) == 1 for chosen in small.chosen.values())
