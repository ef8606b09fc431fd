"""1,000 LtxExtendTraining resources created at once: time until every one has its
prepare Job, and the operator's peak memory.

The Kubernetes API is the real control plane (`tests/harness/control_plane.py`: etcd and
kube-apiserver, built by `make cluster`; `--api emulator` serves kmock from this process
instead); the operator is the real `ltx-operator` in its own process, pointed at it by
a kubeconfig, so its memory is its own (read from its VmHWM while it runs).
`--finished N` first stores N trainings that have already succeeded, as a busy
cluster holds them.

    python tests/benchmarks/bench_operator.py [--resources 1000] [--finished 9000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import kmock

from procstats import cpu_seconds, peak_rss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
from harness import kube_api
from harness.control_plane import ControlPlane, kubeconfig

ROOT = Path(__file__).resolve().parents[2]
TRAININGS = "/apis/ltx-training.io/v1alpha1/namespaces/bench/ltxextendtrainings"
JOBS = "/apis/batch/v1/namespaces/bench/jobs"


@contextlib.asynccontextmanager
async def emulator_api(scratch: Path) -> AsyncIterator[tuple[str, Path, dict, object]]:
    emulator = kube_api.ApiServer()
    async with emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        kube_api.declare(emulator)
        config = scratch / "kubeconfig"
        config.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "bench"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}]}))
        yield url, config, {}, None


@contextlib.asynccontextmanager
async def real_api(scratch: Path) -> AsyncIterator[tuple[str, Path, dict, object]]:
    plane = ControlPlane(scratch / "control-plane")
    plane.start()
    try:
        kubectl = [str(ROOT / ".cluster" / "bin" / "kubectl"), "--kubeconfig",
                   str(plane.kubeconfig)]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")],
                       check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for", "condition=Established",
                        "crd/ltxextendtrainings.ltx-training.io"], check=True,
                       capture_output=True)
        subprocess.run([*kubectl, "create", "namespace", "bench"], check=True,
                       capture_output=True)
        config = scratch / "kubeconfig"
        config.write_text(kubeconfig(plane.url, plane.ca_file,
                                     plane.admin_headers["Authorization"].split()[1],
                                     "operator"))
        yield plane.url, config, plane.admin_headers, plane
    finally:
        plane.stop()


def training(name: str) -> dict:
    return {"apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"trainingDataUrl": f"s3://d/{name}.zip"}}


async def in_parallel(count: int, work, width: int = 64) -> None:
    """`work(i)` for every i below count, `width` at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await work(i)

    await asyncio.gather(*(worker() for _ in range(width)))


async def main(count: int, finished: int, api: str) -> dict:
    scratch = Path(tempfile.mkdtemp())
    serve = real_api if api == "real" else emulator_api
    async with serve(scratch) as (url, config, headers, plane):
        ssl = plane.ssl_context() if plane is not None else None
        async with aiohttp.ClientSession(headers=headers,
                                         connector=aiohttp.TCPConnector(ssl=ssl)) as session:
            async def store_finished(i: int) -> None:
                name = f"done{i:05d}"
                async with session.post(url + TRAININGS, json=training(name)) as r:
                    assert r.status == 201, await r.text()
                status = {"status": {"phase": "Succeeded", "observedGeneration": 1,
                                     "billing": {"units": 100, "steps": 100}}}
                async with session.patch(f"{url}{TRAININGS}/{name}/status", json=status,
                                         headers={"Content-Type":
                                                  "application/merge-patch+json"}) as r:
                    assert r.status == 200, await r.text()

            began = time.perf_counter()
            await in_parallel(finished, store_finished)
            seeded = time.perf_counter() - began

            env = {**os.environ, "KUBECONFIG": str(config), "LTX_OPERATOR_METRICS_PORT": "0",
                   "LTX_OPERATOR_MODEL_CLAIM_NAME": "models"}
            operator = subprocess.Popen(
                [str(Path(sys.executable).parent / "ltx-operator"), "--liveness",
                 "http://127.0.0.1:0/healthz"], env=env, stdout=subprocess.DEVNULL,
                stderr=open(scratch / "operator.log", "w"))
            peak = 0
            try:
                await asyncio.sleep(3)  # the operator logs in and starts its watches

                async def create(i: int) -> None:
                    async with session.post(url + TRAININGS, json=training(f"t{i:04d}")) as r:
                        assert r.status == 201, await r.text()

                start = time.perf_counter()
                await in_parallel(count, create)
                created = time.perf_counter() - start
                jobs = 0
                while jobs < count:
                    peak = max(peak, peak_rss(operator.pid))
                    assert operator.poll() is None, \
                        (scratch / "operator.log").read_text()[-3000:]
                    assert time.perf_counter() - start < 600, f"only {jobs} Jobs after 600 s"
                    async with session.get(url + JOBS) as r:
                        jobs = len((await r.json()).get("items", []))
                    await asyncio.sleep(0.5)
                elapsed = time.perf_counter() - start
                peak = max(peak, peak_rss(operator.pid))
                operator_cpu = cpu_seconds(operator.pid)
            finally:
                operator.terminate()
                try:  # keep serving the API while it shuts down
                    await asyncio.to_thread(operator.wait, 30)
                except subprocess.TimeoutExpired:
                    operator.kill()
        servers = ({n: round(cpu_seconds(p.popen.pid), 1)
                    for n, p in plane.processes.items()} if plane is not None
                   else {"emulator_and_client": round(cpu_seconds(os.getpid()), 1)})
    return {"api": api, "resources": count, "finished_already": finished,
            "seconds_to_store_the_finished": round(seeded, 1),
            "seconds_to_create_them": round(created, 2),
            "seconds_until_every_prepare_job": round(elapsed, 2),
            "operator_peak_rss_mb": round(peak / 2**20, 1),
            "operator_cpu_seconds": round(operator_cpu, 1),
            "server_cpu_seconds": servers, "cpus": os.cpu_count()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--finished", type=int, default=0)
    parser.add_argument("--api", choices=("real", "emulator"), default="real")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.resources, args.finished, args.api)), indent=2))
