"""1,000 LtxExtendTraining resources created at once: time until every one has its
prepare Job, and the operator's peak memory.

The Kubernetes API is kmock, served from this process; the operator is the real
`ltx-operator` in its own process, pointed at it by a kubeconfig, so its memory is
its own (read from its VmHWM while it runs).

    python tests/benchmarks/bench_operator.py [--resources 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import kmock

from procstats import cpu_seconds, peak_rss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
import kube_api

TRAININGS = "/apis/ltx-training.io/v1alpha1/namespaces/bench/ltxextendtrainings"


async def main(count: int) -> dict:
    emulator = kube_api.ApiServer()
    async with emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        kube_api.declare(emulator)
        scratch = Path(tempfile.mkdtemp())
        kubeconfig = scratch / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "bench"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}]}))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LTX_OPERATOR_METRICS_PORT": "0",
               "LTX_OPERATOR_MODEL_CLAIM_NAME": "models"}  # without a model: no Job at all
        operator = subprocess.Popen(
            [str(Path(sys.executable).parent / "ltx-operator"), "--liveness",
             "http://127.0.0.1:0/healthz"], env=env, stdout=subprocess.DEVNULL,
            stderr=open(scratch / "operator.log", "w"))
        peak = 0
        try:
            await asyncio.sleep(3)  # the operator logs in and starts its watches
            async with aiohttp.ClientSession() as session:
                async def create(i: int) -> None:
                    body = {"apiVersion": "ltx-training.io/v1alpha1",
                            "kind": "LtxExtendTraining",
                            "metadata": {"name": f"t{i:04d}", "namespace": "bench"},
                            "spec": {"trainingDataUrl": f"s3://d/{i}.zip"}}
                    async with session.post(url + TRAININGS, json=body) as response:
                        await response.read()

                start = time.perf_counter()
                await asyncio.gather(*(create(i) for i in range(count)))
                created = time.perf_counter() - start
                jobs = 0
                while jobs < count:
                    peak = max(peak, peak_rss(operator.pid))
                    assert operator.poll() is None, (scratch / "operator.log").read_text()[-3000:]
                    assert time.perf_counter() - start < 600, f"only {jobs} Jobs after 600 s"
                    async with session.get(url + "/apis/batch/v1/namespaces/bench/jobs") as r:
                        jobs = len((await r.json()).get("items", []))
                    await asyncio.sleep(0.5)
                elapsed = time.perf_counter() - start
            peak = max(peak, peak_rss(operator.pid))
            operator_cpu = cpu_seconds(operator.pid)
            api_cpu = cpu_seconds(os.getpid())
        finally:
            operator.terminate()
            try:  # keep serving the API while it shuts down
                await asyncio.to_thread(operator.wait, 30)
            except subprocess.TimeoutExpired:
                operator.kill()
    return {"resources": count, "seconds_to_create_them": round(created, 2),
            "seconds_until_every_prepare_job": round(elapsed, 2),
            "operator_peak_rss_mb": round(peak / 2**20, 1),
            "operator_cpu_seconds": round(operator_cpu, 1),
            "mock_api_and_client_cpu_seconds": round(api_cpu, 1), "cpus": os.cpu_count()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=1000)
    print(json.dumps(asyncio.run(main(parser.parse_args().resources)), indent=2))
