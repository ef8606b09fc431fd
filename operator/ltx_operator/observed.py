"""What the operator observes of a training: small, immutable views of its Jobs and
pods, kept in Kopf's indexes (so a training's children are looked up in memory, never
listed per training), and the `Observed` snapshot the reconcile decides on: the
resource, those views, the train pod's progress and the API's answers to the last
plan carried out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ltx_contract.progress import ProgressReport
from ltx_contract.resource import GROUP
from ltx_contract.result import JobResult

MANAGED_BY = {"app.kubernetes.io/managed-by": "ltx-extend"}
TRAINING_LABEL = f"{GROUP}/training"
STAGE_LABEL = f"{GROUP}/stage"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
#: The annotation (and label) holding an Indexed Job's pod's index: its node rank.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
#: The label holding the uid of the Job that made a pod.
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
#: Container waiting reasons that mean the image cannot be pulled.
IMAGE_PULL_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")


@dataclass(frozen=True)
class JobView:
    name: str
    stage: str
    uid: str
    suspended: bool
    #: the queue's name when Kueue manages the Job (it then owns `spec.suspend`)
    queue: str | None
    #: ("Complete" | "Failed", reason, message) once the Job has finished
    finished: tuple[str, str, str] | None
    failed_pods: int = 0
    #: being deleted (a gang restart's failed Job, while its pods terminate)
    deleting: bool = False
    #: (reason, message) of a FailureTarget condition: failing, its pods still stopping
    #: (Kubernetes 1.31+ writes Failed only once none is left)
    failing: tuple[str, str] | None = None
    #: when the Job last started running (status.startTime: reset on resume)
    start_time: str | None = None
    #: when it failed or began to (its FailureTarget's or Failed's transition time)
    failed_at: str | None = None

    @property
    def failed(self) -> bool:
        """Failed, or failing while its pods stop."""
        return self.failing is not None or (self.finished is not None
                                            and self.finished[0] == "Failed")

    def owns(self, pod: PodView) -> bool:
        """The pod is this Job's, not an earlier Job's of the same name (a gang
        restart's predecessor) whose pods are still going."""
        return pod.job == self.name and (not pod.job_uid or not self.uid
                                         or pod.job_uid == self.uid)

    @classmethod
    def of(cls, job: dict[str, Any]) -> JobView:
        meta, spec, status = job["metadata"], job.get("spec") or {}, job.get("status") or {}
        labels = meta.get("labels") or {}
        finished = failing = failed_at = None
        for condition in status.get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") in ("Complete", "Failed"):
                finished = (condition["type"], condition.get("reason") or condition["type"],
                            condition.get("message") or "")
            if condition.get("type") == "FailureTarget":
                failing = (condition.get("reason") or "FailureTarget",
                           condition.get("message") or "")
            if condition.get("type") in ("FailureTarget", "Failed"):
                failed_at = failed_at or condition.get("lastTransitionTime")
        return cls(name=meta["name"], stage=labels.get(STAGE_LABEL, ""),
                   uid=meta.get("uid") or "", suspended=bool(spec.get("suspend")),
                   queue=labels.get(KUEUE_QUEUE_LABEL), finished=finished,
                   failed_pods=int(status.get("failed") or 0),
                   deleting=bool(meta.get("deletionTimestamp")), failing=failing,
                   start_time=status.get("startTime"), failed_at=failed_at)


@dataclass(frozen=True)
class PodView:
    name: str
    job: str
    stage: str
    created: str
    phase: str
    ip: str | None = None
    #: (reason, message) of a PodScheduled=False condition
    unschedulable: tuple[str, str] | None = None
    #: (reason, message) of the container while it waits to start
    waiting: tuple[str, str] | None = None
    #: (exit code, reason, message) once the container ended
    terminated: tuple[int, str, str] | None = None
    #: (reason, message) of a DisruptionTarget condition: preempted, evicted, drained
    disrupted: tuple[str, str] | None = None
    #: the completion index of an Indexed Job's pod (its node rank); None otherwise
    index: int | None = None
    #: the uid of the Job that made the pod
    job_uid: str = ""

    @property
    def leader(self) -> bool:
        """The pod of rank 0: the one that serves progress and reports the result."""
        return self.index in (None, 0)

    @property
    def running(self) -> bool:
        return self.phase == "Running" and self.terminated is None

    @classmethod
    def of(cls, pod: dict[str, Any]) -> PodView:
        meta, status = pod["metadata"], pod.get("status") or {}
        labels = meta.get("labels") or {}
        unschedulable = disrupted = waiting = terminated = None
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                unschedulable = (condition.get("reason") or "Unschedulable",
                                 condition.get("message") or "")
            if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
                disrupted = (condition.get("reason") or "Disrupted",
                             condition.get("message") or "")
        for container in status.get("containerStatuses") or []:
            state = container.get("state") or {}
            if state.get("waiting"):
                waiting = (state["waiting"].get("reason") or "Waiting",
                           state["waiting"].get("message") or "")
            if state.get("terminated"):
                ended = state["terminated"]
                terminated = (int(ended.get("exitCode") or 0), ended.get("reason") or "",
                              ended.get("message") or "")
        job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name", "")
        index = (meta.get("annotations") or {}).get(COMPLETION_INDEX, labels.get(
            COMPLETION_INDEX))
        owner = next((ref.get("uid") or "" for ref in meta.get("ownerReferences") or []
                      if ref.get("kind") == "Job" and ref.get("controller")),
                     labels.get(CONTROLLER_UID, ""))
        return cls(name=meta["name"], job=job, job_uid=owner,
                   stage=labels.get(STAGE_LABEL, ""), created=meta.get("creationTimestamp") or "",
                   phase=status.get("phase") or "Pending", ip=status.get("podIP"),
                   unschedulable=unschedulable, waiting=waiting, terminated=terminated,
                   disrupted=disrupted,
                   index=int(index) if index is not None and str(index).isdigit() else None)


def training_key(body: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, training name) of one of our Jobs or pods."""
    meta = body["metadata"]
    name = (meta.get("labels") or {}).get(TRAINING_LABEL)
    return (meta.get("namespace") or "", name) if name else None


def newest(job: JobView, pods: Sequence[PodView]) -> PodView | None:
    """The Job's newest pod (a retried Job's replacement)."""
    mine = [p for p in pods if job.owns(p)]
    return max(mine, key=lambda p: p.created) if mine else None


def ended(job: JobView, pods: Sequence[PodView]) -> PodView | None:
    """The pod whose end decided the Job: for a completed Job rank 0's that succeeded
    (an earlier, preempted pod may be the only end the index has seen yet; the other
    nodes' pods report no result); for a failed Job of many pods, one that left a result
    (the rank that knew why) before the ones stopped with it."""
    over = [p for p in pods if job.owns(p) and p.terminated is not None]
    if job.finished is not None and job.finished[0] == "Complete":
        over = [p for p in over if p.terminated[0] == 0 and p.leader]
        return max(over, key=lambda p: p.created) if over else None
    if any(p.index is not None for p in over):
        def weight(pod: PodView) -> tuple[bool, bool, str]:
            result = JobResult.from_termination_message(pod.terminated[2])
            return (result is not None and not result.succeeded, pod.terminated[0] != 0,
                    pod.created)
        return max(over, key=weight) if over else None
    return max(over, key=lambda p: p.created) if over else None


@dataclass(frozen=True)
class Refusal:
    """The API's refusal to create a stage's Job."""

    stage: str
    code: int
    reason: str
    message: str
    retry_after: float | None = None  # the API's Retry-After, in seconds

    @property
    def transient(self) -> bool:
        """The API server's own trouble (overloaded, restarting): not a refusal of the
        Job; tried again soon, without a condition or an Event."""
        return self.code == 429 or self.code >= 500

    @property
    def final(self) -> bool:
        """Invalid or malformed: the same Job is refused again, whatever the wait."""
        return self.code in (400, 422)

    @property
    def quota(self) -> bool:
        return self.code == 403 and "exceeded quota" in self.message


@dataclass(frozen=True)
class Effects:
    """What the API answered to the plan carried out."""

    created: Mapping[str, JobView] = field(default_factory=dict)
    refusal: Refusal | None = None
    #: Kueue-managed Jobs whose Workload was not found (Kueue has not made it yet)
    no_workload: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Observed:
    """All the reconcile decides on, gathered before it runs (`observe.observe`)."""

    training: dict[str, Any]
    jobs: Mapping[str, JobView]  # by stage
    pods: Sequence[PodView]
    now: datetime
    #: the train pod's last report (read at the progress interval)
    progress: ProgressReport | None = None
    effects: Effects = field(default_factory=Effects)
    #: Jobs whose pods were listed from the API (not only taken from the index)
    listed: frozenset[str] = frozenset()

    def with_effects(self, effects: Effects) -> Observed:
        return replace(self, jobs={**self.jobs, **effects.created}, effects=effects)
