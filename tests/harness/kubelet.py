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

An Indexed Job (`completionMode: Indexed`) gets one pod per completion index, as the Job
controller makes them: the index in the pod's annotation and label
`batch.kubernetes.io/job-completion-index` and its env `JOB_COMPLETION_INDEX`, hostname
`<job>-<index>`; the Job is Complete when every index has succeeded, a failed index's pod
is replaced (pod failure policy and backoff limit as for one pod), and a failed Job's
other pods are stopped. A deleted Job's pods are stopped and removed from the API (the
garbage collector's work; the tests' API server removes the Job at once, as a foreground
deletion does once the pods are gone), also when a new Job of the same name has
replaced it. Downward-API `fieldRef` env is resolved from the pod as stored.
Name resolution is the kubelet's and the cluster DNS's: a pod whose template sets a
`subdomain` runs in its own UTS and mount namespaces with its hostname set and its own
`/etc/hosts` bind-mounted, which maps `<job>-<i>.<subdomain>` (and the namespace-qualified
forms) to pod i's address when a headless Service of that name selects the pods. A
replacement pod keeps its index's address, so the names stay true as DNS keeps them.

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
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from harness.operator_cluster import NAMESPACE, Cluster

log = logging.getLogger(__name__)
TERMINATION_LOG_ENV = "LTX_EXTEND_TERMINATION_LOG"  # where the pod's termination message goes
FALLBACK_LOG_BYTES = 2048  # terminationMessagePolicy FallbackToLogsOnError: the log's tail
WRITE_LOG_ENV = "LTX_WRITE_GUARD_LOG"
POD_IP_ENV = "LTX_HARNESS_POD_IP"
WORK_VOLUME = "work"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
CLUSTER_DOMAIN = "cluster.local"
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


#: Pod addresses, shared by every harness of the session: a process left behind by one
#: test never holds the address (and a port) of another test's pod.
_ADDRESSES = itertools.count(1)


@dataclass
class Pod:
    name: str
    namespace: str
    job: str
    root: Path  # the pod's files: volumes, termination message, log
    process: asyncio.subprocess.Process
    ip: str = "127.0.0.1"
    index: int | None = None  # an Indexed Job's completion index
    job_uid: str = ""
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

    uid: str = ""  # the Job's: a new Job of the same name is another Job
    failed: int = 0
    settled: bool = False  # finished: its rules applied for the last time
    started: float | None = None
    pods: list[Pod] = field(default_factory=list)
    #: the indexes that succeeded (None: the one pod of a Job that is not Indexed)
    succeeded: set[int | None] = field(default_factory=set)
    #: index → its pods' address (a replacement keeps it: its name resolves the same)
    addresses: dict[int | None, str] = field(default_factory=dict)

    def at(self, index: int | None) -> Pod | None:
        """The running pod of an index."""
        pods = [p for p in self.pods if p.index == index]
        return pods[-1] if pods and pods[-1].process.returncode is None else None

    def holds(self, index: int | None) -> bool:
        """Whether a pod of the index runs or ended without being reported yet."""
        return any(p.index == index and not p.reported for p in self.pods)

    @property
    def running(self) -> list[Pod]:
        return [p for p in self.pods if p.process.returncode is None]

    @property
    def active(self) -> Pod | None:
        return self.running[0] if self.running else None


class Kubelet:
    def __init__(self, cluster: Cluster, images: dict[str, list[str]],
                 claims: dict[str, Path], root: Path, interval: float = 0.2,
                 max_pods: int | None = None):
        self.cluster, self.images, self.claims = cluster, images, claims
        self.root, self.interval, self.max_pods = root, interval, max_pods
        self.jobs: dict[tuple[str, str], JobState] = {}
        #: the pods of Jobs deleted (or replaced by a Job of the same name)
        self.removed: list[Pod] = []
        self.errors: list[str] = []
        self.disk_limits: dict[str, int] = {}
        self._addresses = _ADDRESSES
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: Any) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for state in self.jobs.values():
            for pod in state.running:
                await _stop(pod, grace=0)

    def pods(self, job: str, namespace: str = "team") -> list[Pod]:
        """Every pod the Jobs of that name ran, in the order they started (a deleted Job's
        too: `Pod.job_uid` tells the Jobs apart)."""
        return [*(p for p in self.removed if (p.namespace, p.job) == (namespace, job)),
                *self.jobs.get((namespace, job), JobState()).pods]

    def _running(self, job: str, namespace: str, index: int | None) -> Pod:
        state = self.jobs[namespace, job]
        pod = state.active if index is None else state.at(index)
        assert pod is not None, f"Job {job} has no running pod" + (
            f" at index {index}" if index is not None else "")
        return pod

    async def preempt(self, job: str, namespace: str = "team",
                      index: int | None = None) -> Pod:
        """Evict the Job's running pod (of `index`) as a preempting scheduler does."""
        pod = self._running(job, namespace, index)
        pod.disrupted = True
        await self._pod_status(pod, {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": "preempted by a higher-priority pod", "lastTransitionTime": _now()}]})
        _signal(pod, signal.SIGKILL)
        await pod.process.wait()
        return pod

    async def kill(self, job: str, namespace: str = "team", index: int | None = None) -> Pod:
        """Kill the Job's running pod (of `index`) with no condition (the OOM killer, a
        crash)."""
        pod = self._running(job, namespace, index)
        _signal(pod, signal.SIGKILL)
        await pod.process.wait()
        return pod

    def running(self) -> int:
        return sum(len(state.running) for state in self.jobs.values())

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
            except aiohttp.ClientConnectionError:  # the API server is away: try again
                log.info("the API server did not answer; the node tries again")
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
        for key in [k for k in self.jobs if k not in present]:
            await self._collect(self.jobs.pop(key))  # the Job was deleted: so are its pods

    async def _collect(self, state: JobState) -> None:
        """A deleted Job's pods: stopped, then removed from the API."""
        for pod in state.pods:
            await self._delete_pod(pod)
        self.removed += state.pods

    async def _reconcile(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        uid = job["metadata"].get("uid") or ""
        if key in self.jobs and self.jobs[key].uid != uid:  # deleted, and made again
            await self._collect(self.jobs.pop(key))
        state = self.jobs.setdefault(key, JobState(uid=uid))
        if state.settled:
            return
        spec = job["spec"]
        for pod in list(state.pods):
            if pod.process.returncode is not None and not pod.reported:
                pod.reported = True
                _signal(pod, signal.SIGKILL)  # the container ended: its other processes too
                if await self._pod_ended(key, job, state, pod):
                    return
        if spec.get("suspend"):
            if state.running:
                for pod in state.running:  # a suspended Job's pods are removed, uncounted
                    await self._delete_pod(pod)
                await self._job_status(key, {"active": 0, "conditions": [_condition(
                    "Suspended", "JobSuspended", "Job suspended")]})
            return
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and state.started and time.monotonic() - state.started > deadline:
            await self._fail(key, state, "DeadlineExceeded",
                             "Job was active longer than specified")
            return
        for index in _indexes(spec):
            # a pod that ended since the loop above still holds its index until it is counted
            if index in state.succeeded or state.holds(index):
                continue
            if self.max_pods is None or self.running() < self.max_pods:
                await self._start_pod(key, job, state, index)

    async def _start_pod(self, key: tuple[str, str], job: dict[str, Any],
                         state: JobState, index: int | None = None) -> None:
        """What the Job controller, the scheduler and the kubelet do for a new pod."""
        namespace, job_name = key
        base = job_name if index is None else f"{job_name}-{index}"
        name = f"{base}-{secrets.token_hex(3)[:5]}"
        template = job["spec"]["template"]
        pod_spec = dict(template["spec"])
        labels = {**(template.get("metadata") or {}).get("labels", {}), "job-name": job_name}
        annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        if index is not None:  # what the Job controller gives the pod of an index
            labels[COMPLETION_INDEX] = annotations[COMPLETION_INDEX] = str(index)
            pod_spec["hostname"] = base
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": labels,
                            "annotations": annotations,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                 "name": job_name,
                                                 "uid": job["metadata"]["uid"],
                                                 "controller": True}]},
               "spec": pod_spec}
        container = pod_spec["containers"][0]
        await self.cluster.create(f"/api/v1/namespaces/{namespace}/pods", pod)
        await self.cluster.request(
            "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            {"status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"}], "containerStatuses": [{
                    "name": container["name"], "ready": False, "restartCount": 0,
                    "image": container["image"], "imageID": "",
                    "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
        started = await self._launch(pod, job, state, index)
        await self._pod_status(started, {"phase": "Running", "podIP": started.ip,
                                         "startTime": _now()})
        await self._job_status(key, {"active": len(state.running), "startTime": _now()})

    async def _launch(self, pod: dict[str, Any], job: dict[str, Any], state: JobState,
                      index: int | None) -> Pod:
        """Run the pod's container as a local process: the kubelet's part."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        pod_spec = pod["spec"]
        container = pod_spec["containers"][0]
        root = self.root / name
        mounts = self._mounts(pod_spec, container, root)
        guard = self.root / "write-guard"
        guard.mkdir(parents=True, exist_ok=True)
        (guard / "sitecustomize.py").write_text(WRITE_GUARD)
        ip = self._address(state, index)
        pod.setdefault("status", {})["podIP"] = ip
        # the image's files are read-only: no bytecode written next to the sources
        env = {"PATH": os.environ["PATH"], "HOME": str(root / "home"),
               "PYTHONUNBUFFERED": "1", TERMINATION_LOG_ENV: str(root / "termination-log"),
               # the tests' own import path after the guard: a checkout's sources, not
               # the installed copy, are what its pods run
               "PYTHONPATH": os.pathsep.join(filter(None, [str(guard),
                                                           os.environ.get("PYTHONPATH")])),
               "PYTHONDONTWRITEBYTECODE": "1",
               WRITE_LOG_ENV: str(root / "writes.log"), POD_IP_ENV: ip}
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        for source in container.get("envFrom") or []:
            env.update(await self._secret(namespace, source["secretRef"]["name"]))
        for variable in container.get("env") or []:
            if "valueFrom" in variable:
                env[variable["name"]] = _field(pod, variable["valueFrom"])
            else:
                env[variable["name"]] = _in_pod(variable.get("value", ""), mounts)
        command = container.get("command") or self.images[container["image"]]
        args = [_in_pod(a, mounts) for a in container.get("args") or []]
        hosts = None
        if pod_spec.get("subdomain"):
            root.mkdir(parents=True, exist_ok=True)
            hosts = root / "hosts"
            hosts.write_text(await self._hosts(namespace, job, state, index,
                                               pod["metadata"].get("labels") or {}))
        limit = self.disk_limits.get(job["metadata"]["name"])
        tmpfs = (root / "volumes" / WORK_VOLUME, limit) if limit is not None else None
        if hosts is not None or tmpfs is not None:
            command = [*_in_namespaces(tmpfs, hosts, pod_spec.get("hostname")), *command]
        (root / "home").mkdir(parents=True, exist_ok=True)
        with open(root / "log.txt", "wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command, *args, env=env, cwd=root, stdout=log_file,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        started = Pod(name, namespace, job["metadata"]["name"], root, process, ip=ip,
                      index=index, job_uid=state.uid)
        started.allowed = (*mounts.values(), root / "termination-log")
        state.pods.append(started)
        state.started = state.started or time.monotonic()
        return started

    def _address(self, state: JobState, index: int | None) -> str:
        """The address of an index's pods (a replacement keeps it: its name resolves the
        same)."""
        if index not in state.addresses:
            number = next(self._addresses)
            state.addresses[index] = f"127.1.{number // 250 % 250}.{number % 250 + 1}"
        return state.addresses[index]

    async def _hosts(self, namespace: str, job: dict[str, Any], state: JobState,
                     index: int | None, labels: dict[str, str]) -> str:
        """The pod's /etc/hosts: the kubelet's own entry (its hostname under its subdomain)
        and, as the cluster DNS answers them, its peers' names when a headless Service
        named like the subdomain selects the pods."""
        pod_spec = job["spec"]["template"]["spec"]
        subdomain, job_name = pod_spec["subdomain"], job["metadata"]["name"]
        service = await self.cluster.request(
            "GET", f"/api/v1/namespaces/{namespace}/services/{subdomain}")
        selects = bool(service) and service.get("kind") == "Service" and \
            service["spec"].get("clusterIP") == "None" and \
            (service["spec"].get("selector") or {}).items() <= labels.items()
        lines = ["127.0.0.1\tlocalhost"]
        peers = [i for i in _indexes(job["spec"]) if selects or i == index]
        for peer in peers:
            self._address(state, peer)
            host = job_name if peer is None else f"{job_name}-{peer}"
            names = [f"{host}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}",
                     f"{host}.{subdomain}.{namespace}.svc", f"{host}.{subdomain}.{namespace}",
                     f"{host}.{subdomain}"] + ([host] if peer == index else [])
            lines.append(f"{state.addresses[peer]}\t{' '.join(names)}")
        return "\n".join(lines) + "\n"

    def _mounts(self, pod_spec: dict[str, Any], container: dict[str, Any],
                root: Path) -> dict[str, Path]:
        """mountPath -> the local folder that plays the volume."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "emptyDir" in volume or "projected" in volume:  # a token volume: empty here
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
            state.succeeded.add(pod.index)
            indexes = _indexes(job["spec"])
            done: dict[str, Any] = {"active": len(state.running),
                                    "succeeded": len(state.succeeded)}
            if None not in indexes:
                done["completedIndexes"] = _ranges(sorted(i for i in state.succeeded
                                                          if i is not None))
            if not set(indexes) <= state.succeeded:
                await self._job_status(key, done)
                return False
            state.settled = True
            await self._job_status(key, {**done, "completionTime": _now(), "conditions": [
                _condition("Complete", "Completed", "Job completed")]})
            return True
        action = _policy_action(job["spec"].get("podFailurePolicy"), code, pod.disrupted)
        if action == "FailJob":
            await self._fail(key, state, "PodFailurePolicy",
                             f"Container exited with code {code}, matching a FailJob rule")
            return True
        if action != "Ignore":
            state.failed += 1
            await self._job_status(key, {"active": len(state.running), "failed": state.failed})
            if state.failed > job["spec"].get("backoffLimit", 6):
                await self._fail(key, state, "BackoffLimitExceeded",
                                 "Job has reached the specified backoff limit")
                return True
        return False

    async def _fail(self, key: tuple[str, str], state: JobState, reason: str,
                    message: str) -> None:
        """The Job failed: its other running pods are stopped."""
        state.settled = True
        for pod in state.running:
            await self._delete_pod(pod)
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



class NodeKubelet(Kubelet):
    """Only the kubelet (and the cluster DNS), for a real control plane.

    The Job controller makes the pods, counts their ends, applies the pod failure
    policy, backoff limit, deadline and suspend, and stops a failed Job's other pods; the
    garbage collector deletes a deleted Job's pods. This node registers itself, binds
    the pods no node holds (there is no scheduler; `max_pods` is its capacity), runs each
    bound pod's container as a local process, reports its phase, address, conditions
    and termination message through the API, and stops a pod the API marks for
    deletion, then confirms the deletion as a kubelet does."""

    NODE = "node-1"
    STATUS_PATCH = "application/strategic-merge-patch+json"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.by_uid: dict[str, Pod] = {}  # the pods this node ran, by their API uid
        self._beat = -1e9

    async def __aenter__(self) -> NodeKubelet:
        await self._register()
        return await super().__aenter__()

    async def _register(self) -> None:
        nodes = "/api/v1/nodes"
        await self.cluster.create(nodes, {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.NODE, "labels": {"kubernetes.io/hostname": self.NODE}}})
        await self._heartbeat()

    async def _heartbeat(self) -> None:
        """The node's Ready condition and its Lease, renewed as a kubelet does (a cluster's
        node lifecycle controller taints a node that stops renewing)."""
        if time.monotonic() - self._beat < 10:
            return
        self._beat = time.monotonic()
        await self.cluster.request("PATCH", f"/api/v1/nodes/{self.NODE}/status", {"status": {
            "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "the test node is ready",
                            "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}]}},
            self.STATUS_PATCH)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.NODE, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.NODE, "leaseDurationSeconds": 40,
                          "renewTime": _now(micro=True)}}
        await self.cluster.request(
            "PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
            f"{self.NODE}?fieldManager=kubelet&force=true", lease, "application/apply-patch+yaml")

    async def sync(self) -> None:
        await self._heartbeat()
        # this node runs the tests' pods only (on an existing cluster, others' are not ours)
        listed = await self.cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
        if listed.get("kind") != "PodList":  # an error (the server starting): try again
            return
        present = {}
        # the node's slots: its pods not yet ended, those bound but not started yet included
        # (two pods bound in one pass would otherwise both see a free slot)
        occupied = sum(1 for pod in listed.get("items", [])
                       if pod["spec"].get("nodeName") == self.NODE
                       and pod["status"].get("phase") not in ("Succeeded", "Failed"))
        for pod in listed.get("items", []):
            uid = pod["metadata"]["uid"]
            present[uid] = pod
            running = self.by_uid.get(uid)
            if running is not None and running.process.returncode is not None \
                    and not running.reported:
                await self._report_end(running, pod)
            if pod["metadata"].get("deletionTimestamp"):
                await self._confirm_deletion(pod)
            elif not pod["spec"].get("nodeName"):
                if pod["status"].get("phase") in (None, "Pending") and (
                        self.max_pods is None or occupied < self.max_pods):
                    await self._bind(pod)
                    occupied += 1
            elif pod["spec"]["nodeName"] == self.NODE and uid not in self.by_uid \
                    and pod["status"].get("phase") not in ("Succeeded", "Failed"):
                await self._run(pod)
        for uid, running in self.by_uid.items():  # removed from the API at once
            if uid not in present and running.process.returncode is None:
                running.reported = True
                await _stop(running, grace=0)

    async def _bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        await self.cluster.create(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
            {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
             "target": {"apiVersion": "v1", "kind": "Node", "name": self.NODE}})

    def _state(self, pod: dict[str, Any]) -> tuple[tuple[str, str], JobState]:
        """The Job a pod belongs to, by its controller's owner reference."""
        meta = pod["metadata"]
        owner = next(o for o in meta.get("ownerReferences") or [] if o.get("controller"))
        key = (meta["namespace"], owner["name"])
        state = self.jobs.get(key)
        if state is not None and state.uid != owner["uid"]:  # deleted, and made again
            self.removed += state.pods
            state = None
        if state is None:
            state = self.jobs[key] = JobState(uid=owner["uid"])
        return key, state

    async def _run(self, pod: dict[str, Any]) -> None:
        key, state = self._state(pod)
        namespace, job_name = key
        job = await self.cluster.request(
            "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")
        if not job or job.get("kind") != "Job":
            return  # being collected with its Job
        raw = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
        index = int(raw) if raw is not None else None
        started = await self._launch(pod, job, state, index)
        self.by_uid[pod["metadata"]["uid"]] = started
        container = pod["spec"]["containers"][0]
        await self._pod_status(started, {
            "phase": "Running", "podIP": started.ip, "podIPs": [{"ip": started.ip}],
            "hostIP": "127.0.0.1", "startTime": _now(),
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": _now()}
                           for t in ("PodScheduled", "Initialized", "ContainersReady",
                                     "Ready")],
            "containerStatuses": [{"name": container["name"], "ready": True,
                                   "restartCount": 0, "image": container["image"],
                                   "imageID": "", "started": True,
                                   "state": {"running": {"startedAt": _now()}}}]})

    async def _report_end(self, running: Pod, pod: dict[str, Any]) -> None:
        """The container ended: its phase, exit code and message, for the Job controller
        (written again on the next pass until the API takes it)."""
        _signal(running, signal.SIGKILL)  # the container ended: its other processes too
        code = running.process.returncode
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
        conditions = [{"type": t, "status": "False", "lastTransitionTime": _now()}
                      for t in ("ContainersReady", "Ready")]
        if running.disrupted:
            conditions.append({"type": "DisruptionTarget", "status": "True",
                               "reason": "PreemptionByScheduler",
                               "lastTransitionTime": _now()})
        container = pod["spec"]["containers"][0]
        written = await self._pod_status(running, {
            "phase": "Succeeded" if code == 0 else "Failed", "conditions": conditions,
            "containerStatuses": [{
                "name": container["name"], "ready": False, "restartCount": 0,
                "image": container["image"], "imageID": "",
                "state": {"terminated": {
                    "exitCode": code, "message": _termination_message(running, code),
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": _now(), "finishedAt": _now()}}}]})
        running.reported = written.get("kind") == "Pod"
        if running.reported and (stray := running.stray_writes()):
            self.errors.append(f"pod {running.name} wrote outside its volumes: {stray[:20]}")

    async def _confirm_deletion(self, pod: dict[str, Any]) -> None:
        """A pod marked for deletion: stop its container, report it, delete it for good."""
        meta = pod["metadata"]
        running = self.by_uid.get(meta["uid"])
        if running is not None and not running.reported:
            grace = min(float(meta.get("deletionGracePeriodSeconds") or 0), 2.0)
            await _stop(running, grace=grace)
            await self._report_end(running, pod)
        await self.cluster.request(
            "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
             "preconditions": {"uid": meta["uid"]}}, "application/json")

    async def _pod_status(self, pod: Pod, status: dict[str, Any]) -> dict[str, Any]:
        return await self.cluster.request(
            "PATCH", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
            {"status": status}, self.STATUS_PATCH)


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


def _indexes(spec: dict[str, Any]) -> list[int | None]:
    """The pods a Job runs to completion: one per index of an Indexed Job, else one."""
    if spec.get("completionMode") == "Indexed":
        return list(range(int(spec.get("completions") or 1)))
    return [None]


def _ranges(indexes: list[int]) -> str:
    """`completedIndexes` as the Job controller writes it: "0-2,5,7,8" (a run of two is
    two numbers)."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a},{b}" if b == a + 1 else f"{a}-{b}"
                    for a, b in runs)


def _field(pod: dict[str, Any], source: dict[str, Any]) -> str:
    """A downward-API env value (`fieldRef`) from the pod as the API stores it."""
    assert set(source) == {"fieldRef"}, f"the harness resolves fieldRef only, not {source}"
    path = source["fieldRef"]["fieldPath"]
    for mapping in ("labels", "annotations"):
        prefix = f"metadata.{mapping}['"
        if path.startswith(prefix) and path.endswith("']"):
            return (pod["metadata"].get(mapping) or {}).get(path[len(prefix):-2], "")
    plain = {"metadata.name": pod["metadata"]["name"],
             "metadata.namespace": pod["metadata"]["namespace"],
             "spec.hostname": pod["spec"].get("hostname", ""),
             "status.podIP": pod["status"]["podIP"]}
    assert path in plain, f"the harness does not resolve fieldPath {path}"
    return plain[path]


def _on_tmpfs(folder: Path, size: int) -> list[str]:
    """The command prefix that runs a command with `folder` on a tmpfs of `size` bytes."""
    return _in_namespaces((folder, size), None, None)


def _in_namespaces(tmpfs: tuple[Path, int] | None, hosts: Path | None,
                   hostname: str | None) -> list[str]:
    """The command prefix that runs a command in a mount namespace of its own (the mounts
    go when the pod's process ends): with its work volume on a tmpfs of the given size,
    with its own /etc/hosts, and (in a UTS namespace of its own) its hostname."""
    steps, flags = [], ["--mount", "--propagation", "private"]
    if tmpfs is not None:
        folder, size = tmpfs
        steps.append(f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(folder))}")
    if hosts is not None:
        steps.append(f"mount --bind {shlex.quote(str(hosts))} /etc/hosts")
    if hostname:
        flags.append("--uts")
        steps.append(f"hostname {shlex.quote(hostname)}")
    return ["unshare", *flags, "sh", "-c", " && ".join(steps) + ' && exec "$@"', "pod"]


def _in_pod(value: str, mounts: dict[str, Path]) -> str:
    """A path inside the container, as the local path of its volume."""
    for mount, local in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount):]
    return value


def _signal(pod: Pod, number: int) -> None:
    """Signal every process of the pod (a container's processes die with it: a launcher's
    ranks too). Each pod is a session of its own, its group led by its first process."""
    try:
        os.killpg(pod.process.pid, number)
    except ProcessLookupError:
        pass


async def _stop(pod: Pod, grace: float) -> None:
    if pod.process.returncode is not None:
        return
    if grace:  # as a container runtime does: SIGTERM to its first process, then SIGKILL to all
        pod.process.send_signal(signal.SIGTERM)
    else:
        _signal(pod, signal.SIGKILL)
    try:
        await asyncio.wait_for(pod.process.wait(), grace or None)
    except TimeoutError:
        _signal(pod, signal.SIGKILL)
        await pod.process.wait()
    _signal(pod, signal.SIGKILL)  # the container is gone: so is what its process left


def _condition(kind: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _now(micro: bool = False) -> str:
    return datetime.datetime.now(datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")
