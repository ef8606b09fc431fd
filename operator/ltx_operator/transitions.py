"""The transitions a status write makes, each once (a transition is written once): the
Event it posts, what it counts in the operator's metrics and the line it logs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Histogram

from ltx_contract.resource import Jobs, Restarts, TrainingStatus

from . import metrics
from .observed import IMAGE_PULL_REASONS
from .status import condition

#: Waiting reasons that are worth an Event (the rest show in the status only).
NOTABLE_WAITS = {"Queued": "Normal", "Unschedulable": "Warning", "Preempted": "Warning",
                 **{reason: "Warning" for reason in IMAGE_PULL_REASONS}}


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    #: counts the transition in the operator's metrics, given the resource's age (seconds)
    count: Callable[[float | None], None] | None = field(default=None, compare=False,
                                                         repr=False)
    #: (level, message) of the operator's log line about it
    log: tuple[int, str] | None = field(default=None, compare=False)


def restart_counts(status: TrainingStatus) -> tuple[int, int]:
    """(failures, disruptions): the gang's restarts so far."""
    restarts = status.restarts or Restarts()
    return restarts.failures, restarts.disruptions


def transitions(old: TrainingStatus, new: TrainingStatus) -> list[Event]:
    """The Events of the transition from `old` to `new`, in the order they are posted."""
    out = []
    old_jobs, new_jobs = old.jobs or Jobs(), new.jobs or Jobs()
    if new_jobs.prepare and not old_jobs.prepare:
        out.append(Event("Normal", "PrepareStarted", f"Job {new_jobs.prepare} created"))
    if new_jobs.train and not old_jobs.train:
        out.append(Event("Normal", "TrainingStarted",
                         f"dataset ready; Job {new_jobs.train} created",
                         count=_observe_age(metrics.TIME_TO_TRAIN_JOB),
                         log=(logging.INFO, f"dataset ready; train Job {new_jobs.train} created")))
    out += _condition_events(old, new)
    if restart_counts(new) != restart_counts(old):
        cause = "failure" if restart_counts(new)[0] > restart_counts(old)[0] else "disruption"
        out.append(Event("Warning", "GangRestarted", new.restarts.last_reason or "",
                         count=lambda _: metrics.GANG_RESTARTS.labels(cause=cause).inc(),
                         log=(logging.WARNING, f"gang restart: {new.restarts.last_reason}")))
    if new.billing and not old.billing and new.billing.units:
        billing = new.billing
        out.append(Event("Normal", "Billed", f"{billing.units} billable units",
                         count=_billed(billing.units, billing.steps),
                         log=(logging.INFO, f"succeeded after {billing.steps} steps; "
                                            f"billed {billing.units} units")))
    if new.phase != old.phase and new.phase == "Succeeded":
        out.append(Event("Normal", "Succeeded", "training succeeded",
                         count=_outcome("Succeeded", new.phase)))
    if new.phase != old.phase and new.phase == "Failed":
        failed = condition(new, "Failed")
        out.append(Event("Warning", failed.reason, failed.message,
                         count=_outcome(failed.reason, new.phase),
                         log=(logging.WARNING, f"failed ({failed.reason}): {failed.message}; "
                                               "billed 0 units")))
    return out


def _condition_events(old: TrainingStatus, new: TrainingStatus) -> list[Event]:
    """Suspended or resumed, Job creation refused or retried, notable waits, and samples
    without a caption."""
    out = []
    for type_ in ("Suspended", "JobCreated", "Running"):
        before, after = condition(old, type_), condition(new, type_)
        if after is None or (before is not None and (before.status, before.reason,
                                                     before.message) ==
                             (after.status, after.reason, after.message)):
            continue
        if type_ == "Suspended":
            if before is None or before.status != after.status:
                out.append(Event("Normal", after.reason, after.message))
        elif type_ == "JobCreated":
            out.append(Event("Warning" if after.status == "False" else "Normal",
                             after.reason, after.message))
        elif type_ == "Running" and after.reason in NOTABLE_WAITS and (
                before is None or before.reason != after.reason):
            out.append(Event(NOTABLE_WAITS[after.reason], after.reason, after.message))
    captions, had = condition(new, "CaptionsComplete"), condition(old, "CaptionsComplete")
    if captions is not None and captions.status == "False" and (
            had is None or (had.status, had.message) != (captions.status, captions.message)):
        out.append(Event("Warning", captions.reason, captions.message))
    return out


def _observe_age(histogram: Histogram) -> Callable[[float | None], None]:
    def count(age: float | None) -> None:
        if age is not None:
            histogram.observe(age)
    return count


def _billed(units: int, steps: int) -> Callable[[float | None], None]:
    def count(_: float | None) -> None:
        metrics.BILLABLE_UNITS.inc(units)
        metrics.STEPS_TRAINED.inc(steps)
    return count


def _outcome(reason: str, phase: str) -> Callable[[float | None], None]:
    """A finished training, by reason, and the time it took."""
    def count(age: float | None) -> None:
        metrics.OUTCOMES.labels(reason=reason).inc()
        if age is not None:
            metrics.TIME_TO_FINISH.labels(outcome=phase).observe(age)
    return count
