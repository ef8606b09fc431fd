"""Many trainings at once through the whole product while the cluster and the store
misbehave, drawn from a seed; prints one JSON object.

    python tests/benchmarks/soak.py --trainings 50 --seed 1 [--pods 3]

The end-to-end harness: the API server emulator (`tests/harness/kube_api.py` on kmock) served
from this process; the real `ltx-operator` in its own process (killed and restarted at
random moments); the kubelet-playing Jobs (`tests/harness/kubelet.py`) running the real trainer
commands as local processes, at most `--pods` at once; S3 on loopback (moto server mode)
behind a proxy that can make it unreachable; the tiny model; 100 steps per training.

Faults, by kind: the API answering 500/503/429 (Retry-After) to a share of the
operator's requests and 409 to a share of its writes, its watch streams cut mid-way and
the next watch answered 410 Gone; the operator SIGKILLed and restarted; train pods
preempted (DisruptionTarget + SIGKILL) at a random step and prepare pods killed; S3
unreachable for a few seconds when a dataset download, a checkpoint upload or an output
upload begins; a checkpoint left half-written in the store (the LoRA file of a later
step without its state, as an upload cut off between the two leaves it), then the pod
preempted so that it resumes; a train pod's work volume on a size-capped tmpfs
(mounted in the pod's own mount namespace) too small for the run.

What must hold: every training ends Succeeded or Failed with a reason; a Succeeded one
bills once and has every artifact, downloaded from the links of its result document and
loaded (LoRA with safetensors, config as JSON, reel decoded with PyAV); a failed one
bills 0; a disk-full one says so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import kmock

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
from soak_faults import OUTAGE_AT, FaultPlan, S3Outage

from harness import kube_api
from harness.kubelet import Kubelet
from procstats import peak_rss

NAMESPACE = "team"
TRAININGS = f"/apis/ltx-training.io/v1alpha1/namespaces/{NAMESPACE}/ltxextendtrainings"
EVENTS = f"/api/v1/namespaces/{NAMESPACE}/events"
IMAGE = "ltx-extend/trainer:soak"
STORE_SECRET = "ltx-extend-store"
OPERATOR_TOKEN = "soak-operator"
BUCKET = "runs"
CHECKPOINT_EVERY = 20
TRAINER_ARGS = f"--max-sequence-length 32 --checkpoint-every {CHECKPOINT_EVERY} " \
               "--preview-steps 2"
DISK_FULL_BYTES = 2**20  # a train pod's work volume that cannot hold its run
DISK_FULL_WORDS = "disk"  # what a disk-full training's message must say, at least
RBAC = Path(__file__).resolve().parents[2] / "operator" / "ltx_operator" / "rbac.yaml"


def spec(name: str) -> dict[str, Any]:
    return {"trainingDataUrl": f"s3://datasets/{name}.zip", "numberOfSteps": 100,
            "numberOfFrames": 25, "resolution": "low", "aspectRatio": "16:9",
            "withAudio": True, "rank": 8, "validationNumberOfFrames": 25,
            "validationResolution": "low", "validationAspectRatio": "16:9",
            "validation": [{"prompt": "a square glides in",
                            "videoUrl": "s3://datasets/closing-0.mp4"}]}


class Soak:
    def __init__(self, trainings: int, seed: int, pods: int, scratch: Path,
                 api_fault_rate: float, restart_every: tuple[float, float],
                 fault_share: float = 0.12):
        self.names = [f"soak-{seed}-{i:03d}" for i in range(trainings)]
        self.seed, self.pods, self.scratch = seed, pods, scratch
        self.random = random.Random(seed)
        self.plan = FaultPlan(self.names, seed, share=fault_share)
        self.api_fault_rate, self.restart_every = api_fault_rate, restart_every
        self.faults: collections.Counter = collections.Counter()
        self.operator: subprocess.Popen | None = None
        self.operator_peaks: list[int] = []
        self.restarts = 0
        self.billing_writes: dict[str, list[Any]] = collections.defaultdict(list)
        self.progress: dict[str, dict[str, Any]] = {}
        self.done = asyncio.Event()

    # -- the store -------------------------------------------------------------------
    def start_s3(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        self.moto_address = self.moto.get_host_and_port()
        self.env = {"AWS_ACCESS_KEY_ID": "soak-access", "AWS_SECRET_ACCESS_KEY": "soak-secret",
                    "AWS_REGION": "us-east-1"}

    def s3_client(self, endpoint: str) -> Any:
        from ltx_trainer.s3 import client_from_env

        return client_from_env({**self.env, "AWS_ENDPOINT_URL": endpoint})

    def upload_inputs(self, model: Path) -> None:
        from ltx_trainer.sample_data import make_clip

        client = self.s3_client("http://{}:{}".format(*self.moto_address))
        for bucket in ("datasets", BUCKET):
            client.make_bucket(bucket)
        media = self.scratch / "media"
        media.mkdir()
        archive = media / "clips.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for i in range(2):
                clip = make_clip(media / f"clip-{i}.mp4", 1.2, fps=24, size=(160, 96),
                                 audio=True, tone_hz=300 + 90 * i, cuts=())
                z.write(clip, clip.name)
                z.writestr(f"{clip.stem}.txt", "a square glides across")
        for name in self.names:  # one archive per training: its download can be told apart
            client.fput_object("datasets", f"{name}.zip", str(archive))
        closing = make_clip(media / "closing-0.mp4", 1.1, fps=24, size=(160, 96), tone_hz=500)
        client.fput_object("datasets", closing.name, str(closing))

    def outage_for(self, method: str, path: str) -> float | None:
        """Seconds of outage to start at this request, if a planned one is due."""
        parts = path.split("?")[0].strip("/").split("/")
        if parts[:3] == [BUCKET, "trainings", NAMESPACE] and len(parts) > 3:
            name = parts[3]
        elif parts[0] == "datasets" and len(parts) == 2:
            name = parts[1].removesuffix(".zip")
        else:
            return None
        for kind, (verb, part) in OUTAGE_AT.items():
            matches = part in path or (kind == "s3_down_download" and parts[0] == "datasets")
            if method == verb and matches and self.plan.has(kind, name):
                self.plan.chosen[kind].discard(name)
                self.faults[kind] += 1
                return self.plan.outage_seconds()
        return None

    # -- the operator ----------------------------------------------------------------
    def start_operator(self) -> None:
        log = open(self.scratch / "operator.log", "ab")
        self.operator = subprocess.Popen(
            [str(Path(sys.executable).parent / "ltx-operator"), "--liveness",
             f"http://127.0.0.1:{_free_port()}/healthz"], env=self.operator_env, stdout=log,
            stderr=subprocess.STDOUT)
        self.operator_peaks.append(0)

    @contextlib.asynccontextmanager
    async def operator_stopped(self) -> Any:
        """The operator stopped however the run ends (an interrupted soak included)."""
        try:
            yield
        finally:
            if self.operator is not None and self.operator.poll() is None:
                self.stop_operator()

    def stop_operator(self) -> None:
        self.operator.send_signal(signal.SIGKILL)  # no graceful shutdown: a crash
        self.operator.wait()

    async def restart_operator_now_and_then(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(self.random.uniform(*self.restart_every))
            if self.done.is_set():
                return
            self.stop_operator()
            self.faults["operator_killed"] += 1
            await asyncio.sleep(self.random.uniform(0.2, 2.0))
            self.start_operator()
            self.restarts += 1

    async def watch_operator_memory(self) -> None:
        while not self.done.is_set():
            if self.operator is not None and self.operator.poll() is None:
                self.operator_peaks[-1] = max(self.operator_peaks[-1],
                                              peak_rss(self.operator.pid))
            await asyncio.sleep(0.5)

    # -- the pods --------------------------------------------------------------------
    async def disturb_pods(self, kubelet: Kubelet, session: aiohttp.ClientSession) -> None:
        """Kill prepare pods and preempt train pods as planned; leave half-written
        checkpoints behind."""
        store = self.s3_client("http://{}:{}".format(*self.moto_address))
        killed, preempted, half = set(), set(), set()
        while not self.done.is_set():
            for (_, job), state in list(kubelet.jobs.items()):
                pod = state.active
                if pod is None:
                    continue
                name, _, stage = job.rpartition("-")
                if stage == "prepare" and name in self.plan.kill_after and name not in killed:
                    started = self.progress.setdefault(pod.name, {"since": time.monotonic()})
                    if time.monotonic() - started["since"] > self.plan.kill_after[name]:
                        killed.add(name)
                        with contextlib.suppress(AssertionError, ProcessLookupError):
                            await kubelet.kill(job, NAMESPACE)
                            self.faults["prepare_killed"] += 1
                    continue
                if stage != "train":
                    continue
                step = await self.pod_step(session, pod.ip)
                if step is None:
                    continue
                if name in self.plan.preempt_step and name not in preempted \
                        and step >= self.plan.preempt_step[name]:
                    preempted.add(name)
                    with contextlib.suppress(AssertionError, ProcessLookupError):
                        await kubelet.preempt(job, NAMESPACE)
                        self.faults["train_preempted"] += 1
                elif name in self.plan.half_written_step and name not in half \
                        and step >= self.plan.half_written_step[name]:
                    half.add(name)
                    await asyncio.to_thread(self.leave_half_checkpoint, store, name, step)
                    with contextlib.suppress(AssertionError, ProcessLookupError):
                        await kubelet.preempt(job, NAMESPACE)
                        self.faults["checkpoint_half_written"] += 1
            await asyncio.sleep(0.3)

    async def pod_step(self, session: aiohttp.ClientSession, ip: str) -> int | None:
        try:
            async with session.get(f"http://{ip}:{self.progress_port}/progress",
                                   timeout=aiohttp.ClientTimeout(total=2)) as response:
                report = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return report.get("step") if report.get("stage") == "training" else None

    def leave_half_checkpoint(self, store: Any, name: str, step: int) -> None:
        """A later checkpoint whose upload stopped after its LoRA file (half of it)."""
        prefix = f"trainings/{NAMESPACE}/{name}/"
        keys = [o.object_name for o in store.list_objects(BUCKET, prefix=prefix,
                                                           recursive=True)]
        complete = sorted(k for k in keys if "/checkpoints/" in k and k.endswith("/state.pt"))
        if not complete:
            return
        run = complete[-1].split("/checkpoints/")[0]
        later = (step // CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY
        lora = complete[-1].rsplit("/", 1)[0] + "/lora.safetensors"
        data = store.get_object(BUCKET, lora).read()
        half = data[: len(data) // 2]
        import io

        store.put_object(BUCKET, f"{run}/checkpoints/step-{later:06d}/lora.safetensors",
                         io.BytesIO(half), len(half))

    # -- the run ---------------------------------------------------------------------
    async def run(self, deadline: float, model: Path | None = None) -> dict[str, Any]:
        from ltx_trainer.model.tiny import write_tiny_model

        start = time.perf_counter()
        model = model or write_tiny_model(self.scratch / "models" / "tiny")
        self.start_s3()
        self.upload_inputs(model)
        proxy = S3Outage(self.moto_address, self.outage_for)
        await proxy.start()
        endpoint = f"http://127.0.0.1:{proxy.port}"
        emulator = kube_api.ApiServer()
        async with emulator, kmock.Server(emulator) as server:
            url = str(server.url).rstrip("/")
            kube_api.declare(emulator)
            emulator.observers.append(self.observe)
            import yaml

            emulator.enforce(kube_api.Rbac(yaml.safe_load(RBAC.read_text())["rules"],
                                           token=OPERATOR_TOKEN))
            api_faults = kube_api.ApiFaults(
                token=OPERATOR_TOKEN, seed=self.seed, error_rate=self.api_fault_rate,
                conflict_rate=self.api_fault_rate * 2, watch_cut_after=(5.0, 30.0))
            emulator.inject(api_faults)
            self.progress_port = _free_port()
            kubeconfig = self.scratch / "kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "soak",
                "clusters": [{"name": "soak", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": OPERATOR_TOKEN}}],
                "contexts": [{"name": "soak", "context": {"cluster": "soak", "user": "u"}}]}))
            self.operator_env = {
                **os.environ, "KUBECONFIG": str(kubeconfig),
                "LTX_OPERATOR_STORE_URL": f"s3://{BUCKET}/trainings",
                "LTX_OPERATOR_STORE_SECRET": STORE_SECRET,
                "LTX_OPERATOR_MODEL_CLAIM_NAME": "models", "LTX_OPERATOR_TRAINER_IMAGE": IMAGE,
                "LTX_OPERATOR_PROGRESS_PORT": str(self.progress_port),
                "LTX_OPERATOR_METRICS_PORT": "0", "LTX_OPERATOR_TRAINER_ARGS": TRAINER_ARGS,
                "LTX_OPERATOR_PREPARE_CPU": "1", "LTX_OPERATOR_TRAIN_CPU": "1",
                "LTX_OPERATOR_PROGRESS_INTERVAL": "1", "LTX_OPERATOR_TTL_INTERVAL": "2",
                "LTX_OPERATOR_JOB_RETRY_DELAY": "1", "OMP_NUM_THREADS": "1"}
            async with aiohttp.ClientSession() as session:
                from harness.operator_cluster import Cluster

                cluster = Cluster(url, session)
                await cluster.create(f"/api/v1/namespaces/{NAMESPACE}/secrets", {
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORE_SECRET},
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in
                             {**self.env, "AWS_ENDPOINT_URL": endpoint,
                              "OMP_NUM_THREADS": "1"}.items()}})
                entrypoint = [str(Path(sys.executable).parent / "ltx-extend")]
                kubelet = Kubelet(cluster, {IMAGE: entrypoint}, {"models": model},
                                  self.scratch / "node", max_pods=self.pods)
                for name in self.plan.chosen["disk_full"]:
                    kubelet.disk_limits[f"{name}-train"] = DISK_FULL_BYTES
                    self.faults["disk_full"] += 1
                self.start_operator()
                async with kubelet, self.operator_stopped():
                    for name in self.names:
                        await cluster.apply(name, spec(name))
                    tasks = [asyncio.ensure_future(t) for t in (
                        self.restart_operator_now_and_then(), self.watch_operator_memory(),
                        self.disturb_pods(kubelet, session))]
                    finished = await self.wait_for_all(cluster, deadline)
                    self.done.set()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    self.stop_operator()
                    api_faults.active = False
                    report = await self.report(cluster, finished, kubelet, endpoint)
                self.faults.update(api_faults.counts)
        await proxy.stop()
        self.moto.stop()
        report["faults_injected"] = dict(sorted(self.faults.items()))
        report["wall_seconds"] = round(time.perf_counter() - start, 1)
        return report

    def observe(self, plural: str, stored: dict[str, Any]) -> None:
        """Every billing a training's status ever shows (one value, written once)."""
        if plural != "ltxextendtrainings":
            return
        billing = (stored.get("status") or {}).get("billing")
        writes = self.billing_writes[stored["metadata"]["name"]]
        if billing is not None and (not writes or writes[-1] != billing):
            writes.append(billing)

    async def wait_for_all(self, cluster: Any, deadline: float) -> dict[str, dict[str, Any]]:
        finished: dict[str, dict[str, Any]] = {}
        end = time.monotonic() + deadline
        while time.monotonic() < end and len(finished) < len(self.names):
            listed = await cluster.request("GET", TRAININGS)
            for training in listed.get("items", []):
                phase = (training.get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    finished[training["metadata"]["name"]] = training
            await asyncio.sleep(2)
        await asyncio.sleep(3)  # anything that would still be written after the end
        listed = await cluster.request("GET", TRAININGS)
        return {t["metadata"]["name"]: t for t in listed.get("items", [])
                if t["metadata"]["name"] in finished}

    async def report(self, cluster: Any, finished: dict[str, dict[str, Any]],
                     kubelet: Kubelet, endpoint: str) -> dict[str, Any]:
        events = collections.defaultdict(list)
        for event in (await cluster.request("GET", EVENTS)).get("items", []):
            events[(event.get("involvedObject") or {}).get("name")].append(event["reason"])
        outcomes: collections.Counter = collections.Counter()
        billed_once, billed_twice, wrong_bill, missing, unreasoned = 0, [], [], {}, []
        disk_full_unclear = []
        for name in self.names:
            training = finished.get(name)
            if training is None:
                continue
            status = training["status"]
            failed = next((c for c in status.get("conditions") or []
                           if c["type"] == "Failed"), None)
            reason = "Succeeded" if status["phase"] == "Succeeded" else (
                failed or {}).get("reason", "none")
            outcomes[reason] += 1
            units = (status.get("billing") or {}).get("units")
            if len(self.billing_writes[name]) > 1 or events[name].count("Billed") > 1:
                billed_twice.append(name)
            if status["phase"] == "Succeeded":
                if units == 100:
                    billed_once += 1
                else:
                    wrong_bill.append(name)
                problems = await asyncio.to_thread(self.check_artifacts, status, endpoint)
                if problems:
                    missing[name] = problems
            else:
                if units:
                    wrong_bill.append(name)
                if failed is None or not failed.get("message"):
                    unreasoned.append(name)
                if name in self.plan.chosen["disk_full"] and DISK_FULL_WORDS not in (
                        failed or {}).get("message", "").lower():
                    disk_full_unclear.append(f"{name}: {(failed or {}).get('message')}")
        never = sorted(set(self.names) - set(finished))
        stuck = {n: ((await cluster.training(n)).get("status") or {}).get("phase")
                 for n in never}
        return {
            "trainings": len(self.names), "seed": self.seed, "pods_at_once": self.pods,
            "outcomes_by_reason": dict(sorted(outcomes.items())),
            "billed_once": billed_once, "billed_twice": len(billed_twice),
            "billed_wrong": len(wrong_bill), "never_finished": len(never),
            "artifacts_missing_or_unreadable": len(missing),
            "failed_without_reason": len(unreasoned),
            "disk_full_not_said": len(disk_full_unclear),
            "operator_restarts": self.restarts,
            "operator_peak_rss_mb": round(max(self.operator_peaks) / 2**20, 1),
            "operator_peak_rss_mb_each_run": [round(p / 2**20) for p in self.operator_peaks],
            "details": {k: v for k, v in {
                "billed_twice": billed_twice, "billed_wrong": wrong_bill,
                "never_finished": stuck, "artifacts": missing,
                "failed_without_reason": unreasoned, "disk_full_not_said": disk_full_unclear,
                "harness_errors": kubelet.errors[:10]}.items() if v},
        }

    def check_artifacts(self, status: dict[str, Any], endpoint: str) -> list[str]:
        """Every artifact downloaded from its link in the result document, and loaded."""
        import urllib.request

        import av
        from safetensors.torch import load_file

        problems = []
        scratch = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            with urllib.request.urlopen(status["resultUrl"], timeout=30) as response:
                result = json.loads(response.read())
            links = result.get("downloadUrls") or result.get("download_urls") or {}
            for field in ("loraFile", "configFile", "video"):
                link = links.get(field) or links.get(_snake(field))
                if not link or not (status.get("artifacts") or {}).get(field):
                    problems.append(f"{field}: no link")
                    continue
                local = scratch / field
                try:
                    with urllib.request.urlopen(link, timeout=30) as response:
                        local.write_bytes(response.read())
                    if field == "loraFile":
                        assert load_file(str(local)), "an empty LoRA"
                    elif field == "configFile":
                        json.loads(local.read_text())
                    else:
                        with av.open(str(local)) as reel:
                            assert sum(1 for _ in reel.decode(video=0)) >= 25, "a short reel"
                except Exception as exc:
                    problems.append(f"{field}: {type(exc).__name__}: {exc}")
        except Exception as exc:
            problems.append(f"result document: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return problems


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def soak(trainings: int, seed: int, pods: int = 3, deadline: float | None = None,
               api_fault_rate: float = 0.03, restart_every: tuple[float, float] = (20, 60),
               scratch: Path | None = None, model: Path | None = None,
               fault_share: float = 0.12) -> dict[str, Any]:
    """Run the soak; the report as a dict. `model`: the tiny model's folder, if written
    already."""
    own = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="soak-")) if own else scratch
    deadline = deadline or 300 + 150 * trainings / pods
    try:
        return await Soak(trainings, seed, pods, scratch, api_fault_rate,
                          restart_every, fault_share).run(deadline, model)
    finally:
        if own:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainings", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pods", type=int, default=3, help="pods the node runs at once")
    parser.add_argument("--fault-share", type=float, default=0.12,
                        help="share of the trainings that meet each per-training fault")
    parser.add_argument("--keep", type=Path, help="keep the run's files in this folder")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(soak(args.trainings, args.seed, args.pods,
                                      scratch=args.keep, fault_share=args.fault_share)),
                     indent=2))
