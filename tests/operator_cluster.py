"""A cluster for the operator's tests: the API server (kmock with `kube_api`'s
semantics) and the operator running for real in its own thread, spoken to over HTTP.

Test modules import the `cluster` fixture from here.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator
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

import kube_api

NAMESPACE = "team"
TRAININGS = f"/apis/ltx-training.io/v1alpha1/namespaces/{NAMESPACE}/ltxextendtrainings"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
EVENTS = f"/api/v1/namespaces/{NAMESPACE}/events"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
SERVER: dict[str, str] = {}
OPERATOR_TOKEN = "test"
RBAC = Path(__file__).resolve().parents[1] / "operator" / "ltx_operator" / "rbac.yaml"


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=SERVER["url"], scheme="Bearer", token=OPERATOR_TOKEN,
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
        SERVER["url"] = str(server.url).rstrip("/")
        kube_api.declare(emulator)
        configuration = client.Configuration(host=SERVER["url"])
        configuration.api_key = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
        kube.configure(client.ApiClient(configuration))
        emulator.enforce(operator_rbac())
        yield emulator, SERVER["url"]
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
