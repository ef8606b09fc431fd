"""Kopf wiring. Indexes hold each training's Jobs and pods (from watches); every
trigger — the training, one of its Jobs or pods changing, or the resync interval —
wakes the training's one reconcile loop, which runs a pass of the controller
(`controller.run_reconcile`: observe, decide, act, write the status). One loop per
training, so no locks. A finished training's TTL and a deleted one's Jobs are handled
here too."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf

from ltx_contract.resource import GROUP, PLURAL, VERSION

from . import kube, metrics
from .controller import log_about, run_reconcile
from .jobs import service_name
from .observe import snapshot
from .observed import MANAGED_BY, JobView, PodView, training_key
from .settings import OperatorSettings
from .status import is_finished, seconds_since

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


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    own = current()
    settings.scanning.disabled = True
    settings.execution.max_workers = own.max_workers
    kube.size_pool(own.max_workers)
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


# The indexers are coroutines (pure computation, no I/O): a plain function would run in
# the worker pool, queued behind the reconcile passes with the whole Job or pod body.
@kopf.index("batch", "v1", "jobs", labels=MANAGED_BY)
async def training_jobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], JobView] | None:
    key = training_key(body)
    return {key: JobView.of(dict(body))} if key else None


@kopf.index("v1", "pods", labels=MANAGED_BY)
async def training_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], PodView] | None:
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
            jobs, pods = snapshot(training_jobs.get(key, ()), training_pods.get(key, ()))
            try:
                again = await asyncio.to_thread(run_reconcile, _copy(body), jobs, pods,
                                                periodic, current())
            except Exception:
                metrics.RECONCILE_ERRORS.labels(handler="reconcile").inc()
                log.exception("reconcile of %s/%s failed", *key)
                again = None
            interval = current().progress_interval
            periodic = not await _woken(wakeup, stopped, min(interval, again or interval))
    finally:
        if memo.wakeups.get(key) is wakeup:
            del memo.wakeups[key]


def _copy(body: kopf.Body) -> dict[str, Any]:
    """The training for a worker thread, without its managedFields: the reconcile
    reads none of them, and a pass waiting for a thread holds its copy."""
    meta = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    return copy.deepcopy({**body, "metadata": meta})


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
            log_about({"metadata": meta}, "TTL after finish reached: deleting")
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
            log_about({"metadata": meta}, "deleted: Job %s stopped", job)
    service = service_name(meta["name"])
    if int(spec.get("nodes") or 1) > 1 and kube.delete_service(meta["namespace"], service):
        log_about({"metadata": meta}, "deleted: Service %s removed", service)
    if not is_finished(dict(status)):
        metrics.OUTCOMES.labels(reason="Deleted").inc()
