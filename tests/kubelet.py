"""Plays kubelet and the Job controller on one machine, for the end-to-end tests.

For every Job the operator creates, the harness starts a pod the way a cluster would:
it writes the Pod to the API, runs the container's command as a local process (the
image's entrypoint with the container's arguments and environment, its volumes as
local folders, the Secret named in `envFrom` read from the API), gives the pod its own
loopback address as its IP (127.1.x.y: what the pod serves on 0.0.0.0 is served on that
address, so pods of many trainings serve the same port side by side), and when the
process ends writes the pod's phase, exit code and termination message back, then
applies the Job's rules (pod failure policy, backoff limit, deadline, suspend) and
writes the Job's status. A deleted Job's pods are stopped. `preempt()` evicts a running
pod the way the scheduler does: a `DisruptionTarget` condition, then SIGKILL; `kill()`
kills it with no condition, as the OOM killer or a crashed node does. A new pod is
reported `Pending` (ContainerCreating) before it runs. With `max_pods`, the node runs at
most that many pods at once; the other Jobs wait for a free slot, with no pod yet.

`disk_limits` (Job name → bytes) puts a Job's work volume (its `emptyDir` named "work")
on a tmpfs of that size, mounted in the pod's own mount namespace (`unshare`): the pod
sees a full disk (ENOSPC) as it would on a node, while the harness's files stay where
they are.

The root filesystem of the real pods is read-only. The harness guards it: every
process of a pod runs with an audit hook (a `sitecustomize` on its PYTHONPATH) that
records each file it opens for writing and each folder it makes or renames into;
a write anywhere but the pod's volumes and its termination message is an error of
the harness, which the tests report. (Writes made by C libraries without Python's
file calls, e.g. ffmpeg's own output, are not seen; their folders are.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operator_cluster import Cluster

log = logging.getLogger(__name__)
TERMINATION_LOG_ENV = "LTX_EXTEND_TERMINATION_LOG"  # where the pod's termination message goes
FALLBACK_LOG_BYTES = 2048  # terminationMessagePolicy FallbackToLogsOnError: the log's tail
WRITE_LOG_ENV = "LTX_WRITE_GUARD_LOG"
POD_IP_ENV = "LTX_HARNESS_POD_IP"
WORK_VOLUME = "work"
WRITE_GUARD = f"""
import os, sys

_ip = os.environ.get("{POD_IP_ENV}")
if _ip:  # the pod's network: what it serves on every address is served on its own
    import socket

    _bind = socket.socket.bind

    def _pod_bind(self, address):
        if isinstance(address, tuple) and address and address[0] in ("", "0.0.0.0"):
            address = (_ip, *address[1:])
        return _bind(self, address)

    socket.socket.bind = _pod_bind

_log = os.environ.get("{WRITE_LOG_ENV}")
if _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    _target = {{"os.mkdir": 0, "os.rename": 1, "os.replace": 1, "os.symlink": 1,
               "os.link": 1, "shutil.copyfile": 1, "shutil.copytree": 1, "os.truncate": 0}}

    def _record(path):
        if isinstance(path, (str, bytes, os.PathLike)):
            os.write(_fd, (os.path.abspath(os.fsdecode(path)) + "\\n").encode(
                errors="replace"))

    def _guard(event, args):
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(m in mode for m in "wax+")) or (
                    isinstance(flags, int) and flags & _writes):
                _record(path)
        elif event in _target:
            _record(args[_target[event]])

    sys.addaudithook(_guard)
"""


@dataclass
class Pod:
    name: str
    namespace: str
    job: str
    root: Path  # the pod's files: volumes, termination message, log
    process: asyncio.subprocess.Process
    ip: str = "127.0.0.1"
    disrupted: bool = False
    reported: bool = False  # its end was written to the API and counted

    @property
    def log_file(self) -> Path:
        return self.root / "log.txt"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    allowed: tuple[Path, ...] = ()  # where its processes may write: volumes, termination log

    def stray_writes(self) -> list[str]:
        """Paths written outside the pod's volumes (the read-only root filesystem)."""
        written = self.root / "writes.log"
        paths = set(written.read_text().splitlines()) if written.exists() else set()
        return sorted(p for p in paths if p != "/dev/null" and not any(
            Path(p) == a or Path(p).is_relative_to(a) for a in self.allowed))


@dataclass
class JobState:
    """What the Job controller tracks beside the Job's status."""

    failed: int = 0
    started: float | None = None
    pods: list[Pod] = field(default_factory=list)

    @property
    def active(self) -> Pod | None:
        pod = self.pods[-1] if self.pods else None
        return pod if pod is not None and pod.process.returncode is None else None


class Kubelet:
    def __init__(self, cluster: Cluster, images: dict[str, list[str]],
                 claims: dict[str, Path], root: Path, interval: float = 0.2,
                 max_pods: int | None = None):
        self.cluster, self.images, self.claims = cluster, images, claims
        self.root, self.interval, self.max_pods = root, interval, max_pods
        self.jobs: dict[tuple[str, str], JobState] = {}
        self.settled: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        self.disk_limits: dict[str, int] = {}
        self._addresses = itertools.count(1)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: Any) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for state in self.jobs.values():
            if state.active:
                await _stop(state.active, grace=0)

    def pods(self, job: str, namespace: str = "team") -> list[Pod]:
        return list(self.jobs.get((namespace, job), JobState()).pods)

    async def preempt(self, job: str, namespace: str = "team") -> Pod:
        """Evict the Job's running pod as a preempting scheduler does."""
        pod = self.jobs[namespace, job].active
        assert pod is not None, f"Job {job} has no running pod"
        pod.disrupted = True
        await self._pod_status(pod, {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": "preempted by a higher-priority pod", "lastTransitionTime": _now()}]})
        pod.process.send_signal(signal.SIGKILL)
        await pod.process.wait()
        return pod

    async def kill(self, job: str, namespace: str = "team") -> Pod:
        """Kill the Job's running pod with no condition (the OOM killer, a crash)."""
        pod = self.jobs[namespace, job].active
        assert pod is not None, f"Job {job} has no running pod"
        pod.process.send_signal(signal.SIGKILL)
        await pod.process.wait()
        return pod

    def running(self) -> int:
        return sum(1 for state in self.jobs.values() if state.active)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:  # recorded; the test's teardown reports it
                log.exception("kubelet sync failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval)

    async def sync(self) -> None:
        listed = await self.cluster.request("GET", "/apis/batch/v1/jobs")
        present = set()
        for job in listed.get("items", []):
            key = (job["metadata"]["namespace"], job["metadata"]["name"])
            present.add(key)
            await self._reconcile(key, job)
        for key, state in self.jobs.items():
            if key not in present and state.active:  # the Job was deleted: so are its pods
                await self._delete_pod(state.active)

    async def _reconcile(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        if key in self.settled:
            return
        state = self.jobs.setdefault(key, JobState())
        spec = job["spec"]
        last = state.pods[-1] if state.pods else None
        if last is not None and last.process.returncode is not None and not last.reported:
            last.reported = True
            if await self._pod_ended(key, job, state, last):
                return
        active = state.active
        if spec.get("suspend"):
            if active:
                await self._delete_pod(active)  # a suspended Job's pods are removed, uncounted
                await self._job_status(key, {"active": 0, "conditions": [_condition(
                    "Suspended", "JobSuspended", "Job suspended")]})
            return
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and state.started and time.monotonic() - state.started > deadline:
            if active:
                await self._delete_pod(active)
            await self._fail(key, "DeadlineExceeded", "Job was active longer than specified")
            return
        if active is None and (self.max_pods is None or self.running() < self.max_pods):
            await self._start_pod(key, job, state)

    async def _start_pod(self, key: tuple[str, str], job: dict[str, Any],
                         state: JobState) -> None:
        namespace, job_name = key
        name = f"{job_name}-{secrets.token_hex(3)[:5]}"
        template = job["spec"]["template"]
        pod_spec = template["spec"]
        container = pod_spec["containers"][0]
        root = self.root / name
        mounts = self._mounts(pod_spec, container, root)
        guard = self.root / "write-guard"
        guard.mkdir(parents=True, exist_ok=True)
        (guard / "sitecustomize.py").write_text(WRITE_GUARD)
        # the image's files are read-only: no bytecode written next to the sources
        number = next(self._addresses)
        ip = f"127.1.{number // 250 % 250}.{number % 250 + 1}"
        env = {"PATH": os.environ["PATH"], "HOME": str(root / "home"),
               "PYTHONUNBUFFERED": "1", TERMINATION_LOG_ENV: str(root / "termination-log"),
               "PYTHONPATH": str(guard), "PYTHONDONTWRITEBYTECODE": "1",
               WRITE_LOG_ENV: str(root / "writes.log"), POD_IP_ENV: ip}
        for source in container.get("envFrom") or []:
            env.update(await self._secret(namespace, source["secretRef"]["name"]))
        for variable in container.get("env") or []:
            assert "valueFrom" not in variable, "the harness resolves plain values only"
            env[variable["name"]] = _in_pod(variable.get("value", ""), mounts)
        command = container.get("command") or self.images[container["image"]]
        args = [_in_pod(a, mounts) for a in container.get("args") or []]
        limit = self.disk_limits.get(job_name)
        if limit is not None:
            command = [*_on_tmpfs(root / "volumes" / WORK_VOLUME, limit), *command]
        (root / "home").mkdir(parents=True, exist_ok=True)
        created = await self.cluster.create(f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**(template.get("metadata") or {}).get("labels", {}),
                                    "job-name": job_name},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                              "name": job_name, "uid": job["metadata"]["uid"],
                                              "controller": True}]},
            "spec": pod_spec})
        await self.cluster.request(
            "PATCH", f"/api/v1/namespaces/{namespace}/pods/{created['metadata']['name']}/status",
            {"status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"}], "containerStatuses": [{
                    "name": container["name"], "ready": False, "restartCount": 0,
                    "image": container["image"], "imageID": "",
                    "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
        with open(root / "log.txt", "wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command, *args, env=env, cwd=root, stdout=log_file,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        pod = Pod(name, namespace, job_name, root, process, ip=ip)
        pod.allowed = (*mounts.values(), root / "termination-log")
        state.pods.append(pod)
        state.started = state.started or time.monotonic()
        await self._pod_status(pod, {"phase": "Running", "podIP": ip, "startTime": _now()})
        await self._job_status(key, {"active": 1, "startTime": _now()})

    def _mounts(self, pod_spec: dict[str, Any], container: dict[str, Any],
                root: Path) -> dict[str, Path]:
        """mountPath -> the local folder that plays the volume."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                local = root / "volumes" / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
            else:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in self.claims, f"no volume bound to claim {claim}"
                local = self.claims[claim]
            mounts[mount["mountPath"].rstrip("/")] = local / mount.get("subPath", "")
        return mounts

    async def _secret(self, namespace: str, name: str) -> dict[str, str]:
        secret = await self.cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets/"
                                            f"{name}")
        assert secret and secret.get("kind") != "Status", f"Secret {name} not found"
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    async def _pod_ended(self, key: tuple[str, str], job: dict[str, Any], state: JobState,
                         pod: Pod) -> bool:
        """Report the pod's end, then apply the Job's rules. True when the Job finished."""
        code = pod.process.returncode
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
        message = _termination_message(pod, code)
        if stray := pod.stray_writes():
            self.errors.append(f"pod {pod.name} wrote outside its volumes: {stray[:20]}")
        conditions = [{"type": "DisruptionTarget", "status": "True",
                       "reason": "PreemptionByScheduler"}] if pod.disrupted else []
        await self._pod_status(pod, {
            "phase": "Succeeded" if code == 0 else "Failed", "conditions": conditions,
            "containerStatuses": [{
                "name": job["spec"]["template"]["spec"]["containers"][0]["name"],
                "ready": False, "restartCount": 0, "image": "", "imageID": "",
                "state": {"terminated": {"exitCode": code, "message": message,
                                         "reason": "Completed" if code == 0 else "Error",
                                         "finishedAt": _now()}}}]})
        if code == 0:
            self.settled.add(key)
            await self._job_status(key, {"active": 0, "succeeded": 1, "completionTime": _now(),
                                         "conditions": [_condition("Complete", "Completed",
                                                                   "Job completed")]})
            return True
        action = _policy_action(job["spec"].get("podFailurePolicy"), code, pod.disrupted)
        if action == "FailJob":
            await self._fail(key, "PodFailurePolicy",
                             f"Container exited with code {code}, matching a FailJob rule")
            return True
        if action != "Ignore":
            state.failed += 1
            await self._job_status(key, {"active": 0, "failed": state.failed})
            if state.failed > job["spec"].get("backoffLimit", 6):
                await self._fail(key, "BackoffLimitExceeded",
                                 "Job has reached the specified backoff limit")
                return True
        return False

    async def _fail(self, key: tuple[str, str], reason: str, message: str) -> None:
        self.settled.add(key)
        await self._job_status(key, {"active": 0, "conditions": [
            _condition("FailureTarget", reason, message), _condition("Failed", reason, message)]})

    async def _delete_pod(self, pod: Pod) -> None:
        pod.reported = True  # a removed pod is not a failed one
        await _stop(pod, grace=2)
        await self.cluster.request("DELETE", f"/api/v1/namespaces/{pod.namespace}/pods/"
                                   f"{pod.name}")

    async def _pod_status(self, pod: Pod, status: dict[str, Any]) -> None:
        await self.cluster.request("PATCH", f"/api/v1/namespaces/{pod.namespace}/pods/"
                                   f"{pod.name}/status", {"status": status})

    async def _job_status(self, key: tuple[str, str], status: dict[str, Any]) -> None:
        namespace, name = key
        await self.cluster.request("PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/"
                                   f"{name}/status", {"status": status})


def _policy_action(policy: dict[str, Any] | None, code: int, disrupted: bool) -> str | None:
    """The first matching pod failure policy rule's action (batch/v1 semantics)."""
    for rule in (policy or {}).get("rules") or []:
        on_codes = rule.get("onExitCodes")
        if on_codes:
            matches = code in on_codes["values"]
            if matches == (on_codes.get("operator", "In") == "In"):
                return rule["action"]
        for condition in rule.get("onPodConditions") or []:
            if condition["type"] == "DisruptionTarget" and disrupted \
                    and condition.get("status", "True") == "True":
                return rule["action"]
    return None


def _termination_message(pod: Pod, code: int) -> str:
    written = pod.root / "termination-log"
    message = written.read_text() if written.exists() else ""
    if not message and code != 0:  # FallbackToLogsOnError
        message = pod.log()[-FALLBACK_LOG_BYTES:]
    return message


def _on_tmpfs(folder: Path, size: int) -> list[str]:
    """The command prefix that runs a command with `folder` on a tmpfs of `size` bytes,
    in a mount namespace of its own (the mount goes when the pod's process ends)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(folder)]


def _in_pod(value: str, mounts: dict[str, Path]) -> str:
    """A path inside the container, as the local path of its volume."""
    for mount, local in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount):]
    return value


async def _stop(pod: Pod, grace: float) -> None:
    if pod.process.returncode is not None:
        return
    pod.process.send_signal(signal.SIGTERM if grace else signal.SIGKILL)
    try:
        await asyncio.wait_for(pod.process.wait(), grace or None)
    except TimeoutError:
        pod.process.send_signal(signal.SIGKILL)
        await pod.process.wait()


def _condition(kind: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
