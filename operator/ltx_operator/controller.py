"""One pass of a training's reconcile: observe it all once, decide (the pure
`reconcile`), carry out the plan, and write the status in one patch.

The state lives in the training's status and its Jobs, never in memory, so a restarted
operator carries on where it was. The watch's copy of the training may lag behind the
last write: a transition (a Job to make, a condition to change, a bill) is decided on
the object read afresh, and the status write names the resourceVersion it was computed
from, so a write based on a stale read is refused and recomputed. The plan is carried
out once: a recomputed status takes its answers (`Effects`), never a second try, so a
transition (and its bill) is written once."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ltx_contract.resource import GROUP, KIND, VERSION, TrainingStatus

from . import kube, metrics
from .observe import observe
from .observed import STAGE_LABEL, Effects, JobView, Observed, PodView, Refusal
from .reconcile import Plan, reconcile
from .settings import OperatorSettings
from .status import dump_status, merge_patch, parse_status, seconds_since
from .transitions import transitions

log = logging.getLogger(__name__)


def log_about(training: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
    """A log line about one training: JSON logs carry its namespace/name under
    `object`, text logs start with them."""
    meta = training["metadata"]
    log.log(level, message, *args, extra={"k8s_ref": {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "namespace": meta.get("namespace"),
        "name": meta.get("name"), "uid": meta.get("uid")}})


def run_reconcile(training: dict[str, Any], jobs: Mapping[str, JobView],
                  pods: Sequence[PodView], periodic: bool,
                  settings: OperatorSettings) -> float | None:
    """Observe, reconcile, act, write the status; returns when to run again (None: at
    the next interval). Runs in a worker thread; `periodic`: also read progress."""
    observed = observe(training, jobs, pods, periodic, settings.progress_port)
    acted = fresh = False
    for _ in range(4):  # a second time only after a stale read
        plan = reconcile(observed, settings)
        if plan.unobserved:  # never from `observe`: the next pass lists them
            log_about(observed.training, "pods of %s not observed", plan.unobserved,
                      level=logging.DEBUG)
        old = parse_status(observed.training.get("status"))
        if dump_status(plan.status) == dump_status(old) and (acted or not plan.actions):
            return plan.requeue_after
        if not fresh and (plan.actions or _transition(old, plan.status)):
            observed, fresh = _reread(observed), True
            if observed is None:
                return None
            continue
        if not acted and plan.actions:
            observed = observed.with_effects(act(plan, observed, settings))
            acted, plan = True, reconcile(observed, settings)
        try:
            written = _write(observed.training, plan.status)
        except kube.Conflict:  # computed from a stale read: read again, compute again
            observed = _reread(observed)
            if observed is None:
                return None
            continue
        if written is not None:
            announce(observed.training, old, plan.status)
        return plan.requeue_after
    return 1.0


def _reread(observed: Observed) -> Observed | None:
    """The observation with the training read afresh; None when it is gone."""
    meta = observed.training["metadata"]
    training = kube.get_training(meta["namespace"], meta["name"])
    return None if training is None else replace(observed, training=training)


def _transition(old: TrainingStatus, new: TrainingStatus) -> bool:
    """More than progress changed: a transition, decided on a fresh read."""
    return old.model_copy(update={"progress": None}) != new.model_copy(update={"progress": None})


def _write(training: dict[str, Any], status: TrainingStatus) -> dict[str, Any] | None:
    """The status, as a merge patch on the version it was computed from."""
    meta = training["metadata"]
    return kube.patch_training_status(
        meta["namespace"], meta["name"],
        merge_patch(training.get("status") or {}, dump_status(status)),
        meta.get("resourceVersion"))


def act(plan: Plan, observed: Observed, settings: OperatorSettings) -> Effects:
    """Carry out the plan: Services, then Jobs, deletions, suspensions and Kueue's
    Workloads; what the API answered comes back for the status."""
    training = observed.training
    refusal, refused = None, set()
    for service in plan.services:  # before its Job: the pods' names resolve from the start
        kopf.adopt(service, owner=training)
        stage = service["metadata"]["labels"][STAGE_LABEL]
        try:
            if kube.create_service(service):
                log_about(training, "Service %s created", service["metadata"]["name"])
        except ApiException as exc:
            refusal = _refused(training, exc, stage, f"the Service of the {stage} Job")
            refused.add(stage)
    created: dict[str, JobView] = {}
    for manifest in plan.create:
        kopf.adopt(manifest, owner=training)
        stage = manifest["metadata"]["labels"][STAGE_LABEL]
        if stage in refused:
            continue
        try:
            job = kube.create_job(manifest)
        except ApiException as exc:  # quota, an admission webhook, an invalid object
            refusal = _refused(training, exc, stage, f"the {stage} Job")
            continue
        if job is None:  # made by an earlier try
            job = kube.get_job(training["metadata"]["namespace"],
                               manifest["metadata"]["name"]) or manifest
        else:
            metrics.JOBS_CREATED.labels(stage=stage).inc()
            log_about(training, "%s Job %s created", stage, manifest["metadata"]["name"])
        created[stage] = JobView.of(job)
    _change_jobs(plan, training)
    return Effects(created=created, refusal=refusal,
                   no_workload=_activate(plan, observed, settings))


def _refused(training: dict[str, Any], exc: ApiException, stage: str, what: str) -> Refusal:
    refusal = Refusal(stage, exc.status or 0, exc.reason or "", kube.api_message(exc),
                      kube.retry_after(exc))
    log_about(training, "the API refused %s (%s): %s", what, exc.status, refusal.message,
              level=logging.WARNING)
    return refusal


def _change_jobs(plan: Plan, training: dict[str, Any]) -> None:
    namespace = training["metadata"]["namespace"]
    for name, uid in plan.delete.items():  # a failed gang: its pods go before its successor
        if kube.delete_job(namespace, name, uid=uid, foreground=True):
            log_about(training, "Job %s deleted with its pods: the gang restarts", name)
    for name, suspend in plan.suspend.items():
        kube.patch_job(namespace, name, {"spec": {"suspend": suspend}})
        log_about(training, "Job %s %s", name, "suspended" if suspend else "resumed")


def _activate(plan: Plan, observed: Observed, settings: OperatorSettings) -> frozenset[str]:
    """Kueue's Workloads (de)activated; the Jobs whose Workload is not there (yet)."""
    training = observed.training
    missing = set()
    by_name = {j.name: j for j in observed.jobs.values()}
    for name, active in plan.activate.items():
        job = by_name.get(name)
        if job is None or not kube.set_workload_active(training["metadata"]["namespace"],
                                                       job.uid, active,
                                                       settings.kueue_api_version):
            missing.add(name)
        else:
            log_about(training, "Kueue Workload of Job %s %s", name,
                      "activated" if active else "deactivated")
    return frozenset(missing)


def announce(training: dict[str, Any], old: TrainingStatus, new: TrainingStatus) -> None:
    """The Events, metrics and logs of a written transition."""
    created = training["metadata"].get("creationTimestamp")
    age = seconds_since(created) if created else None
    for event in transitions(old, new):
        kopf.event(training, type=event.type, reason=event.reason, message=event.message)
        if event.log is not None:
            log_about(training, event.log[1], level=event.log[0])
        if event.count is not None:
            event.count(age)
