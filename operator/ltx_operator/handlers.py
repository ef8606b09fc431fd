"""Kopf wiring. Indexes hold each training's Jobs and pods (from watches); every
trigger — the training, one of its Jobs or pods changing, or the resync interval —
wakes the training's one reconcile loop, which observes, calls the pure `reconcile`
and carries out its plan. One loop per training, so no locks; the state lives in the
training's status and its Jobs, never in memory, so a restarted operator carries on
where it was. Status writes name the resourceVersion they were computed from: a write
based on a stale read is refused and recomputed, so a transition (and its bill) is
written once."""

from __future__ import annotations

import asyncio
import copy
import logging
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ltx_contract.progress import ProgressReport
from ltx_contract.resource import GROUP, KIND, PLURAL, VERSION

from . import kube, metrics
from .jobs import service_name
from .observed import MANAGED_BY, STAGE_LABEL, JobView, PodView, training_key
from .reconcile import Effects, Observed, Plan, Refusal, events, reconcile, restart_counts
from .settings import OperatorSettings
from .status import dump_status, is_finished, merge_patch, parse_status, seconds_since

log = logging.getLogger(__name__)
_settings: OperatorSettings | None = None


def configure(settings: OperatorSettings) -> None:
    global _settings
    _settings = settings


def current() -> OperatorSettings:
    """The settings in force: configured by `ltx-operator`, else read at start-up."""
    global _settings
    if _settings is None:
        _settings = OperatorSettings.from_env()
    return _settings


def _log(training: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
    """A log line about one training: JSON logs carry its namespace/name under
    `object`, text logs start with them."""
    meta = training["metadata"]
    log.log(level, message, *args, extra={"k8s_ref": {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "namespace": meta.get("namespace"),
        "name": meta.get("name"), "uid": meta.get("uid")}})


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    own = current()
    settings.scanning.disabled = True
    settings.execution.max_workers = own.max_workers
    # the reconcile loops' API calls run in Kopf's pool: MAX_WORKERS bounds them too
    asyncio.get_running_loop().set_default_executor(settings.execution.executor)
    # Events are the transitions the reconcile posts, not every log line
    settings.posting.loggers = False
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Kopf's own bookkeeping goes to annotations under our prefix, never into our status
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    memo.wakeups = {}  # (namespace, name) → the asyncio.Event its reconcile loop waits on
    metrics.serve(own.metrics_port)


@kopf.index("batch", "v1", "jobs", labels=MANAGED_BY)
def training_jobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], JobView] | None:
    key = training_key(body)
    return {key: JobView.of(dict(body))} if key else None


@kopf.index("v1", "pods", labels=MANAGED_BY)
def training_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], PodView] | None:
    key = training_key(body)
    return {key: PodView.of(dict(body))} if key else None


def _wake(memo: kopf.Memo, key: tuple[str, str] | None) -> None:
    wakeup = (getattr(memo, "wakeups", None) or {}).get(key)
    if wakeup is not None:
        wakeup.set()


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY)
async def job_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _wake(memo, training_key(body))


@kopf.on.event("v1", "pods", labels=MANAGED_BY)
async def pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _wake(memo, training_key(body))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def training_changed(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    """Keep the resources-by-phase metric in step with the watch, and wake the
    reconcile when the spec changed (suspend); its own status writes wake nothing."""
    key = (body.metadata.get("namespace", ""), body.metadata.get("name", ""))
    if type == "DELETED":
        metrics.PHASES.pop(key, None)
        return
    metrics.PHASES[key] = body.status.get("phase") or "Pending"
    if body.metadata.get("generation") != body.status.get("observedGeneration"):
        _wake(memo, key)


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return not is_finished(dict(status))


@kopf.daemon(GROUP, VERSION, PLURAL, when=_unfinished, cancellation_timeout=10.0)
async def reconcile_loop(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo,
                         training_jobs: kopf.Index, training_pods: kopf.Index,
                         **_: Any) -> None:
    """The training's one reconcile loop: on every wake-up, and every progress
    interval (when it also pulls progress), until the training finishes."""
    key = (body.metadata["namespace"], body.metadata["name"])
    wakeup = asyncio.Event()
    memo.wakeups[key] = wakeup
    periodic = True
    try:
        while not stopped:
            wakeup.clear()
            # the indexes are read here, on the operator's loop, and handed over
            # a Job being deleted gives way to a live one of its stage (a stale index entry)
            jobs = {j.stage: j for j in sorted(
                training_jobs[key] if key in training_jobs else (), key=lambda j: not j.deleting)}
            pods = list(training_pods[key] if key in training_pods else ())
            try:
                again = await asyncio.to_thread(run_reconcile, copy.deepcopy(dict(body)),
                                                jobs, pods, periodic)
            except Exception:
                metrics.RECONCILE_ERRORS.labels(handler="reconcile").inc()
                log.exception("reconcile of %s/%s failed", *key)
                again = None
            interval = current().progress_interval
            periodic = not await _woken(wakeup, stopped, min(interval, again or interval))
    finally:
        if memo.wakeups.get(key) is wakeup:
            del memo.wakeups[key]


async def _woken(wakeup: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> bool:
    """Wait for a wake-up, the daemon's stop or the timeout; True when woken."""
    async def stop() -> None:
        await stopped.wait()

    waits = {asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stop())}
    done, pending = await asyncio.wait(waits, timeout=max(timeout, 0.05),
                                       return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return bool(done)


def run_reconcile(training: dict[str, Any], jobs: dict[str, JobView], pods: list[PodView],
                  periodic: bool) -> float | None:
    """Observe, reconcile, act, write the status; returns when to run again (None:
    at the next interval). Runs in a worker thread.

    The watch's copy of the training may lag behind the last write: a transition (a
    Job to make, a condition to change, a bill) is decided on the object read afresh,
    and its actions are carried out once even when the write has to be recomputed."""
    own = current()
    meta = training["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    progress: ProgressReport | None = None
    effects: Effects | None = None
    listed: list[PodView] = []
    fresh = False
    for _ in range(4):
        observed = Observed(training, jobs, [*pods, *listed], datetime.now(UTC), progress,
                            listed=frozenset(p.job for p in listed))
        plan = reconcile(observed, own)
        if plan.missing_results and not listed:  # a finished Job's pod not seen by the watch
            listed = [PodView.of(p) for job in plan.missing_results
                      for p in kube.job_pods(namespace, job)]
            observed = replace(observed, pods=[*pods, *listed],
                               listed=frozenset(plan.missing_results))
            plan = reconcile(observed, own)
        if plan.progress_from and periodic and progress is None:
            progress = _pull_progress(plan.progress_from, own.progress_port)
            if progress is not None:
                observed = replace(observed, progress=progress)
                plan = reconcile(observed, own)
        if effects is not None:  # carried out already: their answers, not a second try
            observed = observed.with_effects(effects)
            plan = reconcile(observed, own)
        old = parse_status(training.get("status"))
        new = dump_status(plan.status)
        if new == dump_status(old) and (effects is not None or not plan.actions):
            return plan.requeue_after
        if not fresh and (plan.actions or _transition(old, plan.status)):
            training, fresh = kube.get_training(namespace, name), True
            if training is None:
                return None
            continue
        if effects is None and plan.actions:
            effects = _act(plan, training, jobs, own)
            jobs = {**jobs, **effects.created}
            plan = reconcile(observed.with_effects(effects), own)
            new = dump_status(plan.status)
        try:
            written = kube.patch_training_status(
                namespace, name, merge_patch(training.get("status") or {}, new),
                training["metadata"].get("resourceVersion"))
        except kube.Conflict:  # computed from a stale read: read again, compute again
            training, fresh = kube.get_training(namespace, name), True
            if training is None:
                return None
            continue
        if written is not None:
            _announce(training, old, plan)
        return plan.requeue_after
    return 1.0


def _transition(old: Any, new: Any) -> bool:
    """More than progress changed: a transition, decided on a fresh read."""
    return old.model_copy(update={"progress": None}) != new.model_copy(update={"progress": None})


def _act(plan: Plan, training: dict[str, Any], jobs: dict[str, JobView],
         own: OperatorSettings) -> Effects:
    namespace = training["metadata"]["namespace"]
    created: dict[str, JobView] = {}
    refusal = None
    refused_stages = set()
    for service in plan.services:  # before its Job: the pods' names resolve from the start
        kopf.adopt(service, owner=training)
        stage = service["metadata"]["labels"][STAGE_LABEL]
        try:
            if kube.create_service(service):
                _log(training, "Service %s created", service["metadata"]["name"])
        except ApiException as exc:
            refusal = Refusal(stage, exc.status or 0, exc.reason or "", kube.api_message(exc),
                              kube.retry_after(exc))
            refused_stages.add(stage)
            _log(training, "the API refused the Service of the %s Job (%s): %s", stage,
                 exc.status, refusal.message, level=logging.WARNING)
    for manifest in plan.create:
        kopf.adopt(manifest, owner=training)
        stage = manifest["metadata"]["labels"][STAGE_LABEL]
        if stage in refused_stages:
            continue
        try:
            job = kube.create_job(manifest)
        except ApiException as exc:  # quota, an admission webhook, an invalid object
            refusal = Refusal(stage, exc.status or 0, exc.reason or "", kube.api_message(exc),
                              kube.retry_after(exc))
            _log(training, "the API refused the %s Job (%s): %s", stage, exc.status,
                 refusal.message, level=logging.WARNING)
            continue
        if job is None:  # made by an earlier try
            job = kube.get_job(namespace, manifest["metadata"]["name"]) or manifest
        else:
            metrics.JOBS_CREATED.labels(stage=stage).inc()
            _log(training, "%s Job %s created", stage, manifest["metadata"]["name"])
        created[stage] = JobView.of(job)
    for name, uid in plan.delete.items():  # a failed gang: its pods go before its successor
        if kube.delete_job(namespace, name, uid=uid, foreground=True):
            _log(training, "Job %s deleted with its pods: the gang restarts", name)
    for name, suspend in plan.suspend.items():
        kube.patch_job(namespace, name, {"spec": {"suspend": suspend}})
        _log(training, "Job %s %s", name, "suspended" if suspend else "resumed")
    missing = set()
    by_name = {j.name: j for j in jobs.values()}
    for name, active in plan.activate.items():
        job = by_name.get(name)
        if job is None or not kube.set_workload_active(namespace, job.uid, active,
                                                       own.kueue_api_version):
            missing.add(name)
        else:
            _log(training, "Kueue Workload of Job %s %s", name,
                 "activated" if active else "deactivated")
    return Effects(created=created, refusal=refusal, no_workload=frozenset(missing))


def _announce(training: dict[str, Any], old: Any, plan: Plan) -> None:
    """Events, metrics and logs of a written transition."""
    new = plan.status
    for event in events(old, new):
        kopf.event(training, type=event.type, reason=event.reason, message=event.message)
    age = _age(training)
    if (new.jobs and new.jobs.train) and not (old.jobs and old.jobs.train):
        _log(training, "dataset ready; train Job %s created", new.jobs.train)
        if age is not None:
            metrics.TIME_TO_TRAIN_JOB.observe(age)
    (failures, disruptions), (old_failures, old_disruptions) = (restart_counts(new),
                                                                 restart_counts(old))
    if (failures, disruptions) != (old_failures, old_disruptions):
        counted = failures > old_failures
        metrics.GANG_RESTARTS.labels(cause="failure" if counted else "disruption").inc()
        _log(training, "gang restart: %s", new.restarts.last_reason, level=logging.WARNING)
    if new.billing and not old.billing and new.billing.units:
        metrics.BILLABLE_UNITS.inc(new.billing.units)
        metrics.STEPS_TRAINED.inc(new.billing.steps)
        _log(training, "succeeded after %d steps; billed %d units", new.billing.steps,
             new.billing.units)
    if is_finished(new) and not is_finished(old):
        reason = "Succeeded" if new.phase == "Succeeded" else next(
            c.reason for c in new.conditions if c.type == "Failed")
        metrics.OUTCOMES.labels(reason=reason).inc()
        if age is not None:
            metrics.TIME_TO_FINISH.labels(outcome=new.phase).observe(age)
        if new.phase == "Failed":
            failed = next(c for c in new.conditions if c.type == "Failed")
            _log(training, "failed (%s): %s; billed 0 units", failed.reason, failed.message,
                 level=logging.WARNING)


def _age(training: dict[str, Any]) -> float | None:
    created = training["metadata"].get("creationTimestamp")
    return seconds_since(created) if created else None


def _pull_progress(address: str, port: int) -> ProgressReport | None:
    """/progress of the train pod (no API credentials in the pod)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/progress", timeout=3) as response:
            return ProgressReport.model_validate_json(response.read())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def _finished_with_ttl(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return spec.get("ttlSecondsAfterFinished") is not None and is_finished(dict(status)) \
        and bool(status.get("completionTime"))


@kopf.daemon(GROUP, VERSION, PLURAL, when=_finished_with_ttl, cancellation_timeout=5.0)
async def delete_after_ttl(stopped: kopf.DaemonStopped, spec: kopf.Spec, status: kopf.Status,
                           meta: kopf.Meta, **_: Any) -> None:
    """`ttlSecondsAfterFinished`: delete the finished resource and, with it, its Jobs."""
    while not stopped:
        ttl, done = spec.get("ttlSecondsAfterFinished"), status.get("completionTime")
        if ttl is None or not done:
            return
        remaining = ttl - seconds_since(done)
        if remaining <= 0:
            _log({"metadata": meta}, "TTL after finish reached: deleting")
            await asyncio.to_thread(kube.delete_training, meta["namespace"], meta["name"])
            return
        await stopped.wait(min(remaining, current().ttl_interval))


@kopf.on.delete(GROUP, VERSION, PLURAL)
def stop_jobs(meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any) -> None:
    """A deleted training's Jobs stop now (not only when the garbage collector gets to
    them), and the headless Service of one on many nodes goes with them; an unfinished
    run has billed nothing and bills nothing."""
    for job in (status.get("jobs") or {}).values():
        if kube.delete_job(meta["namespace"], job):
            _log({"metadata": meta}, "deleted: Job %s stopped", job)
    service = service_name(meta["name"])
    if int(spec.get("nodes") or 1) > 1 and kube.delete_service(meta["namespace"], service):
        _log({"metadata": meta}, "deleted: Service %s removed", service)
    if not is_finished(dict(status)):
        metrics.OUTCOMES.labels(reason="Deleted").inc()
