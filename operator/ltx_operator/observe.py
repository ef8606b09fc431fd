"""Observing a training, all before the reconcile decides: its Jobs and pods from the
indexes (a snapshot), the pods of a Job whose end is being decided listed from the API (the watch
may not have brought them yet), and the train pod's progress from its leader."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ltx_contract.progress import ProgressReport
from ltx_contract.spec import SpecError, parse_spec

from . import kube
from .observed import JobView, Observed, PodView, ended, newest
from .status import is_finished, is_true, parse_status


def snapshot(jobs: Iterable[JobView], pods: Iterable[PodView]
             ) -> tuple[dict[str, JobView], list[PodView]]:
    """A training's Jobs (by stage) and pods as the indexes hold them now. A Job being
    deleted gives way to a live one of its stage (a stale index entry)."""
    return {j.stage: j for j in sorted(jobs, key=lambda j: not j.deleting)}, list(pods)


def observe(training: dict[str, Any], jobs: Mapping[str, JobView], pods: Sequence[PodView],
            periodic: bool, progress_port: int) -> Observed:
    """The training as the reconcile sees it; `periodic`: also read the train pod's
    progress (at the progress interval, not on every wake-up)."""
    namespace = training["metadata"]["namespace"]
    to_list = pods_to_list(training, jobs, pods)
    listed = [PodView.of(p) for job in to_list for p in kube.job_pods(namespace, job)]
    source = progress_source(jobs, pods) if periodic else None
    return Observed(training, jobs, [*pods, *listed], datetime.now(UTC),
                    progress=None if source is None else pull_progress(source, progress_port),
                    listed=frozenset(to_list))


def pods_to_list(training: dict[str, Any], jobs: Mapping[str, JobView],
                 pods: Sequence[PodView]) -> list[str]:
    """The Jobs whose pods are listed from the API, not only taken from the index: a
    finished Job of the stage in progress whose deciding pod's end the watch has not
    brought yet, and a gang's failed (or failing) Job, whose restart is decided on the
    pods as the API has them now (unless decided already: it is then being replaced)."""
    status = parse_status(training.get("status"))
    if is_finished(status):
        return []
    try:
        nodes = parse_spec(dict(training.get("spec") or {})).nodes
    except SpecError:
        return []  # failed by the reconcile, on no pod
    replacing = status.restarts.replacing if status.restarts else None
    stages = ("train",) if is_true(status, "DatasetReady") else ("prepare", "train")
    out = []
    for job in (jobs[stage] for stage in stages if stage in jobs):
        if job.stage == "train" and nodes > 1 and job.failed and job.uid != replacing:
            out.append(job.name)
        elif job.finished and ended(job, pods) is None:
            out.append(job.name)
    return out


def progress_source(jobs: Mapping[str, JobView], pods: Sequence[PodView]) -> str | None:
    """The address of the pod whose /progress to read: the train Job's newest leader
    (rank 0), while it runs."""
    job = jobs.get("train")
    if job is None or job.finished:
        return None
    pod = newest(job, [p for p in pods if p.leader])
    return pod.ip if pod is not None and pod.running else None


def pull_progress(address: str, port: int) -> ProgressReport | None:
    """/progress of the train pod (no API credentials in the pod)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/progress", timeout=3) as response:
            return ProgressReport.model_validate_json(response.read())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
