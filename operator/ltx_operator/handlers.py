"""Kopf handlers: each does one thing; the state lives in the resource's status and
its child Jobs, never in memory, so a restarted operator carries on where it was."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections import defaultdict
from typing import Any

import kopf

from ltx_contract.billing import billable_units, cost
from ltx_contract.progress import ProgressReport
from ltx_contract.resource import GROUP, KIND, PLURAL, VERSION
from ltx_contract.spec import SpecError, TrainingSpec, parse_spec

from . import kube, metrics
from .jobs import MANAGED_BY, STAGE_LABEL, TRAINING_LABEL, build_job, job_name
from .settings import OperatorSettings
from .status import is_finished, now, seconds_since, set_condition

log = logging.getLogger(__name__)
SETTINGS = OperatorSettings.from_env()
#: One writer at a time per training within this (single active) operator.
_LOCKS: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def configure(settings: OperatorSettings) -> None:
    global SETTINGS
    SETTINGS = settings


def _log(training: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
    """A log line about one training: JSON logs carry its namespace/name under
    `object`, text logs start with them."""
    meta = training["metadata"]
    log.log(level, message, *args, extra={"k8s_ref": {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "namespace": meta.get("namespace"),
        "name": meta.get("name"), "uid": meta.get("uid")}})


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.scanning.disabled = True
    settings.execution.max_workers = SETTINGS.max_workers
    # Events are the transitions the handlers post, not every log line
    settings.posting.loggers = False
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Kopf's own bookkeeping goes to annotations under our prefix, never into our status
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    metrics.serve(SETTINGS.metrics_port)


def _fail(body: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """The status of a training that ended before training completed: bills 0."""
    status = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    conditions = set_condition(status.get("conditions"), "Failed", True, reason, message,
                               generation)
    if reason == "InvalidSpec":
        conditions = set_condition(conditions, "Validated", False, reason, message, generation)
    metrics.OUTCOMES.labels(reason=reason).inc()
    return {"phase": "Failed", "conditions": conditions, "completionTime": now(),
            "billing": status.get("billing") or {"units": 0, "steps": 0, "cost": "0.00",
                                                 "billedTime": now()}}


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_prepare_job(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch,
                       **_: Any) -> None:
    """Validate the spec and start the prepare Job (no GPU)."""
    generation = meta.get("generation")
    try:
        parsed = parse_spec(dict(spec))
    except SpecError as exc:
        message = "; ".join(exc.problems)
        patch.status.update(_fail(dict(body), "InvalidSpec", message))
        kopf.warn(body, reason="InvalidSpec", message=message)
        _log(body, "invalid spec: %s", message, level=logging.WARNING)
        return
    job = build_job("prepare", dict(body), parsed, SETTINGS)
    kopf.adopt(job, owner=body)
    conditions = set_condition(body.status.get("conditions"), "Validated", True, "Valid",
                               "the spec is valid", generation)
    namespace, name = meta["namespace"], meta["name"]
    # The status is written before the Job exists (not by Kopf after the handler), so a
    # Job that ends at once cannot have its outcome overwritten by "Preparing".
    with _LOCKS[namespace, name]:
        current = (kube.get_training(namespace, name) or {}).get("status") or {}
        if not current.get("jobs") and not is_finished(current):  # not on a handler rerun
            kube.patch_training_status(namespace, name, {
                "phase": "Suspended" if parsed.suspend else "Preparing",
                "conditions": conditions, "observedGeneration": generation,
                "startTime": body.status.get("startTime") or now(),
                "jobs": {"prepare": job["metadata"]["name"]},
                "effective": {"numberOfFrames": parsed.number_of_frames,
                              "validationNumberOfFrames": parsed.validation_number_of_frames},
            })
        if kube.create_job(job):
            metrics.JOBS_CREATED.labels(stage="prepare").inc()
            _log(body, "prepare Job %s created", job["metadata"]["name"])
    kopf.info(body, reason="PrepareStarted", message=f"Job {job['metadata']['name']} created")


def _finished(job: dict[str, Any]) -> tuple[str, str] | None:
    """('Complete' | 'Failed', reason) once the Job has finished."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return condition["type"], condition.get("reason") or condition["type"]
    return None


def _result(namespace: str, job: str) -> tuple[dict[str, Any] | None, str | None]:
    """The trainer's result from the newest pod's termination message, and how the
    container ended (e.g. OOMKilled)."""
    for pod in reversed(kube.job_pods(namespace, job)):
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (state.get("state") or {}).get("terminated") or {}
            if terminated:
                try:
                    return json.loads(terminated.get("message") or ""), terminated.get("reason")
                except json.JSONDecodeError:
                    return None, terminated.get("reason")
    return None, None


@kopf.on.event(GROUP, VERSION, PLURAL)
def track_phase(body: kopf.Body, type: str, **_: Any) -> None:
    """Keep the resources-by-phase metric in step with the watch."""
    key = (body.metadata.get("namespace", ""), body.metadata.get("name", ""))
    if type == "DELETED":
        metrics.PHASES.pop(key, None)
    else:
        metrics.PHASES[key] = body.status.get("phase") or "Pending"


def _age(training: dict[str, Any]) -> float | None:
    created = training["metadata"].get("creationTimestamp")
    if not created:
        return None
    return seconds_since(created)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY)
def job_changed(body: kopf.Body, type: str, **_: Any) -> None:
    """Move the owning training on when one of its Jobs finishes."""
    try:
        _job_changed(body, type)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(handler="job_changed").inc()
        raise


def _job_changed(body: kopf.Body, type: str) -> None:
    if type == "DELETED":
        return
    finished = _finished(dict(body))
    labels = body.metadata.get("labels") or {}
    name, stage = labels.get(TRAINING_LABEL), labels.get(STAGE_LABEL)
    if finished is None or name is None:
        return
    namespace = body.metadata["namespace"]
    # Events of a training's two Jobs are handled concurrently (after a restart both
    # replay at once): one at a time per training, each reading the status afresh.
    with _LOCKS[namespace, name]:
        _settle_job(body, namespace, name, stage, finished)


def _settle_job(body: kopf.Body, namespace: str, name: str, stage: str,
                finished: tuple[str, str]) -> None:
    training = kube.get_training(namespace, name)
    if training is None or is_finished(training.get("status")):
        return  # deleted, or already settled (a replayed event bills nothing twice)
    if stage == "prepare" and (training.get("status") or {}).get("jobs", {}).get("train"):
        return  # the train Job exists already: the prepare result was taken
    outcome, job_reason = finished
    result, container_reason = _result(namespace, body.metadata["name"])
    if outcome == "Failed":
        reason = (result or {}).get("reason") or (
            "OOMKilled" if container_reason == "OOMKilled" else job_reason)
        message = (result or {}).get("message") or f"the {stage} Job failed: {job_reason}"
        kube.patch_training_status(namespace, name, _fail(training, reason, message))
        if (age := _age(training)) is not None:
            metrics.TIME_TO_FINISH.labels(outcome="Failed").observe(age)
        kopf.warn(training, reason=reason, message=message)
        _log(training, "%s Job failed (%s): %s; billed 0 units", stage, reason, message,
             level=logging.WARNING)
        return
    spec = parse_spec(training["spec"])
    if stage == "prepare":
        _start_training(training, spec, result or {})
    else:
        _succeed(training, spec, result or {})


def _start_training(training: dict[str, Any], spec: TrainingSpec, result: dict[str, Any]
                    ) -> None:
    meta = training["metadata"]
    job = build_job("train", training, spec, SETTINGS)
    kopf.adopt(job, owner=training)
    if kube.create_job(job):
        metrics.JOBS_CREATED.labels(stage="train").inc()
        if (age := _age(training)) is not None:
            metrics.TIME_TO_TRAIN_JOB.observe(age)
        kopf.info(training, reason="TrainingStarted",
                  message=f"dataset ready; Job {job['metadata']['name']} created")
        _log(training, "dataset ready; train Job %s created", job["metadata"]["name"])
    status = training.get("status") or {}
    generation = meta.get("generation")
    conditions = set_condition(status.get("conditions"), "DatasetReady", True, "DatasetReady",
                               result.get("message", "dataset prepared"), generation)
    conditions = set_condition(conditions, "Training", True, "Started", "training started",
                               generation)
    kube.patch_training_status(meta["namespace"], meta["name"], {
        "phase": "Suspended" if spec.suspend else "Training", "conditions": conditions,
        "jobs": {**(status.get("jobs") or {}), "train": job["metadata"]["name"]},
        "artifacts": {**(status.get("artifacts") or {}), **(result.get("artifacts") or {})},
        "progress": {"step": 0, "totalSteps": spec.number_of_steps, "percent": 0.0,
                     "summary": f"0/{spec.number_of_steps}", "lastUpdateTime": now()},
    })


def _succeed(training: dict[str, Any], spec: TrainingSpec, result: dict[str, Any]) -> None:
    meta, status = training["metadata"], training.get("status") or {}
    generation = meta.get("generation")
    steps = int(result.get("stepsCompleted") or spec.number_of_steps)
    patch: dict[str, Any] = {
        "phase": "Succeeded", "completionTime": now(),
        "artifacts": {**(status.get("artifacts") or {}), **(result.get("artifacts") or {})},
        "progress": {"step": steps, "totalSteps": spec.number_of_steps, "percent": 100.0,
                     "summary": f"{steps}/{spec.number_of_steps}", "lastUpdateTime": now()},
    }
    conditions = set_condition(status.get("conditions"), "Training", False, "Completed",
                               result.get("message", "training completed"), generation)
    patch["conditions"] = set_condition(conditions, "Succeeded", True, "Succeeded",
                                        "the LoRA is ready", generation)
    if not status.get("billing"):  # billed once per resource, whatever replays happen
        units = billable_units(steps, succeeded=True)
        patch["billing"] = {"units": units, "steps": steps, "billedTime": now(),
                            "cost": str(cost(units, SETTINGS.price_per_unit))}
        metrics.BILLABLE_UNITS.inc(units)
        metrics.STEPS_TRAINED.inc(steps)
        kopf.info(training, reason="Billed", message=f"{units} billable units")
        _log(training, "succeeded after %d steps; billed %d units", steps, units)
    metrics.OUTCOMES.labels(reason="Succeeded").inc()
    if (age := _age(training)) is not None:
        metrics.TIME_TO_FINISH.labels(outcome="Succeeded").observe(age)
    kube.patch_training_status(meta["namespace"], meta["name"], patch)
    kopf.info(training, reason="Succeeded", message="training succeeded")


def _training_running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == "Training"


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.progress_interval, when=_training_running)
def pull_progress(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    """Pull /progress from the train pod (no API credentials in the pod)."""
    pods = kube.job_pods(meta["namespace"], job_name(meta["name"], "train"))
    address = next((p["status"].get("podIP") for p in reversed(pods)
                    if (p.get("status") or {}).get("phase") == "Running"
                    and p["status"].get("podIP")), None)
    if address is None:
        return
    try:
        url = f"http://{address}:{SETTINGS.progress_port}/progress"
        with urllib.request.urlopen(url, timeout=3) as response:
            progress = ProgressReport.model_validate_json(response.read())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return
    total, step = progress.total_steps or 0, progress.step
    new = {"stage": progress.stage, "step": step, "totalSteps": total,
           "loss": progress.loss, "etaSeconds": progress.eta_seconds,
           "percent": round(100 * step / total, 1) if total else None,
           "summary": f"{step}/{total}"}
    old = {k: v for k, v in (body.status.get("progress") or {}).items() if k in new}
    if old != new:  # status is patched only when something changed
        patch.status["progress"] = {**new, "lastUpdateTime": now()}


@kopf.on.field(GROUP, VERSION, PLURAL, field="spec.suspend")
def suspend_or_resume(body: kopf.Body, meta: kopf.Meta, old: Any, new: Any, **_: Any) -> None:
    """Suspend the active Job (batch/v1 `suspend`) or resume it."""
    status = body.status
    if is_finished(dict(status)) or bool(old) == bool(new):  # absent counts as false
        return
    namespace, name = meta["namespace"], meta["name"]
    with _LOCKS[namespace, name]:
        current = (kube.get_training(namespace, name) or {}).get("status") or {}
        if is_finished(current):
            return
        jobs = current.get("jobs") or {}
        active = jobs.get("train") or jobs.get("prepare")
        if active:
            kube.patch_job(namespace, active, {"spec": {"suspend": bool(new)}})
        kube.patch_training_status(namespace, name, {
            "phase": "Suspended" if new else ("Training" if jobs.get("train") else "Preparing"),
            "conditions": set_condition(
                current.get("conditions"), "Suspended", bool(new),
                "Suspended" if new else "Resumed",
                f"Job {active} {'suspended' if new else 'resumed'}", meta.get("generation")),
        })
    kopf.info(body, reason="Suspended" if new else "Resumed",
              message=f"Job {active} {'suspended' if new else 'resumed'}")
    _log(body, "Job %s %s", active, "suspended" if new else "resumed")


def _expired(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    ttl = spec.get("ttlSecondsAfterFinished")
    done = status.get("completionTime")
    if ttl is None or not done or not is_finished(dict(status)):
        return False
    return seconds_since(done) >= ttl


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.ttl_interval, when=_expired)
def delete_after_ttl(meta: kopf.Meta, **_: Any) -> None:
    """`ttlSecondsAfterFinished`: delete the finished resource and, with it, its Jobs."""
    _log({"metadata": meta}, "TTL after finish reached: deleting")
    kube.delete_training(meta["namespace"], meta["name"])


@kopf.on.delete(GROUP, VERSION, PLURAL)
def stop_jobs(meta: kopf.Meta, status: kopf.Status, **_: Any) -> None:
    """A deleted training's Jobs stop now (not only when the garbage collector gets to
    them); an unfinished run has billed nothing and bills nothing."""
    for job in (status.get("jobs") or {}).values():
        if kube.delete_job(meta["namespace"], job):
            _log({"metadata": meta}, "deleted: Job %s stopped", job)
    if not is_finished(dict(status)):
        metrics.OUTCOMES.labels(reason="Deleted").inc()
