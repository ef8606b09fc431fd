"""An active stage followed through its pods: the phase, the `Running` condition (what
`kubectl get ltxt` shows while the stage waits) and the train pod's progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ltx_contract.progress import ProgressReport
from ltx_contract.resource import Jobs, Progress, TrainingStatus, human_duration
from ltx_contract.spec import TrainingSpec

from .observed import IMAGE_PULL_REASONS, JobView, Observed, PodView, newest
from .status import is_true, set_condition, stamp


def follow_pods(observed: Observed, status: TrainingStatus, stage: str, job: JobView,
                spec: TrainingSpec, generation: int | None) -> None:
    """Phase and conditions of an active stage, and its progress."""
    now = observed.now
    jobs = status.jobs.model_copy() if status.jobs else Jobs()
    if getattr(jobs, stage) != job.name:
        setattr(jobs, stage, job.name)
        status.jobs = jobs
    status.start_time = status.start_time or stamp(now)
    if stage == "train" and not is_true(status, "Training"):
        set_condition(status, "Training", True, "Started", "training started", generation, now)
        status.progress = Progress(step=0, total_steps=spec.number_of_steps, percent=0.0,
                                   summary=f"0/{spec.number_of_steps}",
                                   last_update_time=stamp(now))
    running, reason, message = pod_state(job, observed.pods)
    set_condition(status, "Running", running, reason, message, generation, now)
    # Pending until a pod of the stage runs: `kubectl get ltxt` tells waiting from working
    status.phase = ("Training" if stage == "train" else "Preparing") if running else "Pending"
    pod = newest(job, [p for p in observed.pods if p.leader])
    if stage == "train" and pod is not None and pod.running and observed.progress is not None:
        _progress(status, observed.progress, now)


def pod_state(job: JobView, pods: Sequence[PodView]) -> tuple[bool, str, str]:
    """(a pod of the Job runs, reason, message): what `kubectl get ltxt` shows while the
    stage waits — queued by Kueue, unschedulable, image pull failures, preempted."""
    if job.suspended and job.queue:
        return False, "Queued", (f"Job {job.name} waits for Kueue to admit it "
                                 f"(queue {job.queue})")
    by_index: dict[int | None, list[PodView]] = {}
    for pod in pods:
        if job.owns(pod):
            by_index.setdefault(pod.index, []).append(pod)
    if len(by_index) > 1:  # a gang works when each of its pods does: the first that waits
        states = [_pod_state(job, newest, gang=True) for _, newest in sorted(
            ((i or 0, max(group, key=lambda p: p.created)) for i, group in by_index.items()),
            key=lambda item: item[0])]
        return next((state for state in states if not state[0]), states[0])
    return _pod_state(job, newest(job, pods))


def _pod_state(job: JobView, pod: PodView | None, gang: bool = False
               ) -> tuple[bool, str, str]:
    if pod is None:
        return False, "JobPending", f"Job {job.name} has no pod yet"
    if pod.running:
        return True, "Running", f"pod {pod.name} is running"
    if pod.terminated is not None or pod.phase in ("Succeeded", "Failed"):
        if pod.phase == "Succeeded":
            return True, "Completed", f"pod {pod.name} succeeded"
        then = ("the gang starts again from the last checkpoint" if gang else
                "the Job starts another, which resumes from the last checkpoint")
        if pod.disrupted is not None:
            why, detail = pod.disrupted
            return False, "Preempted", f"pod {pod.name} was stopped ({why}: {detail}); {then}"
        code = pod.terminated[0] if pod.terminated else None
        retry = "the gang starts again" if gang else "the Job retries"
        return False, "Restarting", f"pod {pod.name} failed (exit code {code}); {retry}"
    if pod.unschedulable is not None:
        return False, "Unschedulable", pod.unschedulable[1] or pod.unschedulable[0]
    if pod.waiting is not None and pod.waiting[0] in IMAGE_PULL_REASONS:
        return False, pod.waiting[0], pod.waiting[1] or f"cannot pull the image of {pod.name}"
    if pod.waiting is not None:
        return False, "PodPending", f"pod {pod.name}: {pod.waiting[0]} {pod.waiting[1]}".strip()
    return False, "PodPending", f"pod {pod.name} is {pod.phase}"


def _progress(status: TrainingStatus, report: ProgressReport, now: datetime) -> None:
    total, step = report.total_steps or 0, report.step
    eta = report.eta_seconds
    new = Progress(stage=report.stage, step=step, total_steps=total, loss=report.loss,
                   eta_seconds=eta, eta=None if eta is None else human_duration(eta),
                   steps_per_second=report.steps_per_second,
                   percent=round(100 * step / total, 1) if total else None,
                   summary=f"{step}/{total}")
    old = status.progress.model_copy(update={"last_update_time": None}) \
        if status.progress else None
    if old != new:  # written only when something changed
        status.progress = new.model_copy(update={"last_update_time": stamp(now)})
    if report.validation is not None:
        status.validation = report.validation
