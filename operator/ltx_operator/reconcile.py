"""The one reconcile: from what is observed of a training (the resource, its Jobs and
their pods) to what should be (the Jobs to create or change, and its status).

Pure: no API calls, no clock of its own. The controller observes everything first
(`observe`), calls `reconcile`, carries out the plan and, with the API's answers
(`Effects`) in the observation, calls it once more for the status it writes. The
status is the training's memory across restarts: a prepare that finished
(`DatasetReady`), the bill (written once), refused creations being retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ltx_contract.billing import billable_units, cost
from ltx_contract.manifest import uncaptioned_warning
from ltx_contract.outcomes import FINAL_EXIT_CODES
from ltx_contract.resource import (
    Artifacts,
    Billing,
    Effective,
    Progress,
    Restarts,
    Retry,
    TrainingStatus,
    name_problems,
)
from ltx_contract.result import JobResult
from ltx_contract.spec import SpecError, TrainingSpec, parse_spec

from .follow import follow_pods
from .jobs import build_job, build_service, model_source
from .observed import JobView, Observed, ended
from .settings import OperatorSettings
from .status import (
    drop_condition,
    is_finished,
    is_true,
    later,
    parse_status,
    parse_time,
    set_condition,
    stamp,
)

NO_MODEL = ("no base model to train: set spec.model (a claim or a store URL) or the "
            "operator's default, the chart's model.claimName or model.url")
#: The Jobs' failure reasons a restart of the gang cannot help.
FINAL_JOB_REASONS = ("DeadlineExceeded",)


@dataclass
class Plan:
    status: TrainingStatus
    create: list[dict[str, Any]] = field(default_factory=list)
    #: Services the Jobs to create need (made first: a many-node Job's headless Service)
    services: list[dict[str, Any]] = field(default_factory=list)
    #: Job name → spec.suspend, for Jobs Kueue does not manage
    suspend: dict[str, bool] = field(default_factory=dict)
    #: Job name → Workload spec.active, for Jobs Kueue manages
    activate: dict[str, bool] = field(default_factory=dict)
    #: Job name → uid: failed gangs' Jobs to delete with their pods (foreground)
    delete: dict[str, str] = field(default_factory=dict)
    #: Jobs whose end needs their pods listed, which this observation lacks: nothing is
    #: decided on them (`observe` lists them; only an observation made by hand lacks them)
    unobserved: list[str] = field(default_factory=list)
    #: run again after this many seconds (a retry that is due)
    requeue_after: float | None = None

    @property
    def actions(self) -> bool:
        return bool(self.create or self.suspend or self.activate or self.delete)


def reconcile(observed: Observed, settings: OperatorSettings) -> Plan:
    status = parse_status(observed.training.get("status"))
    plan = Plan(status=status)
    if is_finished(status):
        return plan  # the outcome and the bill are final
    spec = _validate(observed, status, settings)
    if spec is None:
        return plan
    stage = "train" if is_true(status, "DatasetReady") else "prepare"
    job = observed.jobs.get(stage)
    if stage == "prepare" and job is not None and job.finished:
        if _end_prepare(observed, spec, status, plan, job):
            return plan
        stage, job = "train", observed.jobs.get("train")
    restarts = status.restarts
    if restarts and restarts.replacing and job is not None and job.uid != restarts.replacing:
        status.restarts = restarts.model_copy(update={"replacing": None})  # its successor
    if stage == "train" and job is not None and _end_train(observed, spec, status, plan, job,
                                                           settings):
        return plan
    _run_stage(observed, spec, status, plan, stage, job, settings)
    return plan


def _validate(observed: Observed, status: TrainingStatus,
              settings: OperatorSettings) -> TrainingSpec | None:
    """The spec, or None when the training fails for it: invalid, or no base model."""
    generation, now = observed.training["metadata"].get("generation"), observed.now
    # the CRD refuses these names at admission; a cluster with an older CRD fails them here
    problems = name_problems(observed.training)
    try:
        spec = parse_spec(dict(observed.training.get("spec") or {}))
    except SpecError as exc:
        problems += exc.problems
    if problems:
        message = "; ".join(problems)
        set_condition(status, "Validated", False, "InvalidSpec", message, generation, now)
        _fail(status, "InvalidSpec", message, generation, now)
        return None
    set_condition(status, "Validated", True, "Valid", "the spec is valid", generation, now)
    status.observed_generation = generation
    source = model_source(spec, settings)
    model = source.uri if source is not None else None
    status.effective = Effective(number_of_frames=spec.number_of_frames,
                                 validation_number_of_frames=spec.validation_number_of_frames,
                                 model=model)
    if model is None:  # nothing could train: no Job, no GPU, no bill
        _fail(status, "NoBaseModel", NO_MODEL, generation, now)
        return None
    return spec


def _end_prepare(observed: Observed, spec: TrainingSpec, status: TrainingStatus, plan: Plan,
                 job: JobView) -> bool:
    """The finished prepare Job: the training fails with it, or its dataset is ready.
    True when the training goes no further on this pass."""
    generation = observed.training["metadata"].get("generation")
    result = _result(observed, job, plan)
    if job.name in plan.unobserved:
        return True
    if job.finished[0] == "Failed":
        _fail_job(observed, status, job, result, generation)
        return True
    set_condition(status, "DatasetReady", True, "DatasetReady",
                  (result and result.message) or "dataset prepared", generation, observed.now)
    _note_captions(status, spec, result, generation, observed.now)
    _add_artifacts(status, result)
    return False


def _end_train(observed: Observed, spec: TrainingSpec, status: TrainingStatus, plan: Plan,
               job: JobView, settings: OperatorSettings) -> bool:
    """A failed gang starts again; a finished train Job ends the training. True when
    decided here."""
    if spec.nodes > 1 and job.failed and _restart_gang(observed, spec, status, plan, job):
        return True
    if not job.finished:
        return False
    result = _result(observed, job, plan)
    if job.name in plan.unobserved:
        return True
    generation = observed.training["metadata"].get("generation")
    if job.finished[0] == "Failed":
        _fail_job(observed, status, job, result, generation)
    else:
        _succeed(status, spec, result, generation, observed.now, settings)
    return True


def _run_stage(observed: Observed, spec: TrainingSpec, status: TrainingStatus, plan: Plan,
               stage: str, job: JobView | None, settings: OperatorSettings) -> None:
    """The stage in progress: suspended or resumed, its Job asked for, or its pods
    followed."""
    generation = observed.training["metadata"].get("generation")
    if spec.suspend:
        _suspend(observed, status, plan, stage, job, generation)
        return
    if is_true(status, "Suspended"):
        _resume(observed, status, plan, job, generation)
    if job is None:
        _create(observed, spec, status, plan, stage, settings)
        if not is_finished(status):
            status.phase = "Pending"  # until the Job exists
        return
    if job.suspended and not job.queue:
        plan.suspend[job.name] = False  # not Kueue's: nothing else resumes it
    if status.retry is not None and status.retry.stage == stage:
        set_condition(status, "JobCreated", True, "Created",
                      f"Job {job.name} created after {status.retry.attempts} refusal(s)",
                      generation, observed.now)
        status.retry = None
    follow_pods(observed, status, stage, job, spec, generation)


def _fail(status: TrainingStatus, reason: str, message: str, generation: int | None,
          now: datetime) -> None:
    """Ended before training completed: bills 0."""
    status.phase = "Failed"
    set_condition(status, "Failed", True, reason, message, generation, now)
    drop_condition(status, "Running")
    status.retry = None
    status.completion_time = stamp(now)
    status.billing = status.billing or Billing(units=0, steps=0, cost="0.00",
                                               billed_time=stamp(now))


def _result(observed: Observed, job: JobView, plan: Plan) -> JobResult | None:
    """The stage's result, from the newest ended pod's termination message. A finished
    Job whose pod's end the watch has not brought yet: its pods are listed first."""
    pod = ended(job, observed.pods)
    if pod is None:
        if job.name not in observed.listed:
            plan.unobserved.append(job.name)
        return None
    return JobResult.from_termination_message(pod.terminated[2])


def _fail_job(observed: Observed, status: TrainingStatus, job: JobView, result: JobResult | None,
              generation: int | None) -> None:
    _, job_reason, _ = job.finished
    pod = ended(job, observed.pods)
    reason = (result and result.reason) or (
        "OOMKilled" if pod is not None and pod.terminated[1] == "OOMKilled" else job_reason)
    message = (result and result.message) or f"the {job.stage} Job failed: {job_reason}"
    if status.restarts and status.restarts.failures:
        message += f" (after {status.restarts.failures} restart(s) of the gang)"
    _fail(status, reason, message, generation, observed.now)


def _restart_gang(observed: Observed, spec: TrainingSpec, status: TrainingStatus, plan: Plan,
                  job: JobView) -> bool:
    """A training on many nodes whose Job failed (or is failing) starts again as a whole:
    the Job goes with its pods (foreground), then a new one starts every pod at once,
    meeting at a fresh rendezvous and resuming from the last checkpoint (the JobSet way).
    A preempted pod's restart is not counted; any other counts against the spec's
    backoffLimit. The decision is written first and the Job deleted on the next pass, so
    no restart goes uncounted. False when the failure is the training's: a final exit
    code, the deadline, or no restarts left."""
    now, generation = observed.now, observed.training["metadata"].get("generation")
    restarts = status.restarts or Restarts()
    mine = [p for p in observed.pods if job.owns(p)]
    if restarts.replacing == job.uid:  # decided: the Job goes with its pods
        if not job.deleting:
            plan.delete[job.name] = job.uid
        stopping = sorted({p.name for p in mine if p.terminated is None})
        message = restarts.last_reason or "the gang starts again"
        if stopping:  # a pod on a node that is gone stops only when the node is deleted
            message += f"; waiting for pod(s) {', '.join(stopping)} to stop"
        set_condition(status, "Running", False, "Restarting", message, generation, now)
        status.phase = "Pending"
        return True
    if job.name not in observed.listed:  # decided on the pods as the API has them now
        plan.unobserved.append(job.name)
        return True
    reason = job.finished[1] if job.finished else job.failing[0]
    if reason in FINAL_JOB_REASONS or any(
            p.terminated is not None and p.terminated[0] in FINAL_EXIT_CODES for p in mine):
        return False
    disrupted = next((p for p in mine if p.disrupted is not None), None)
    if disrupted is None and restarts.failures >= spec.backoff_limit:
        return False
    failed = ended(job, observed.pods)
    again = f"the {spec.nodes} pods start again from the last checkpoint"
    if disrupted is not None:
        why, detail = disrupted.disrupted
        message = f"pod {disrupted.name} was stopped ({why}: {detail}); {again} (not counted)"
    else:
        cause = (f"pod {failed.name} failed (exit code {failed.terminated[0]})"
                 if failed is not None else f"Job {job.name} failed ({reason})")
        message = f"{cause}; {again} (restart {restarts.failures + 1} of {spec.backoff_limit})"
    status.restarts = Restarts(failures=restarts.failures + (disrupted is None),
                               disruptions=restarts.disruptions + (disrupted is not None),
                               active_seconds=restarts.active_seconds + _ran(job, now),
                               replacing=job.uid, last_reason=message,
                               last_restart_time=stamp(now))
    set_condition(status, "Running", False, "Restarting", message, generation, now)
    status.phase = "Pending"
    plan.requeue_after = 0.1  # the deletion follows once this is written
    return True


def _ran(job: JobView, now: datetime) -> int:
    """Seconds the Job was active: from its (last) start to its failure."""
    if not job.start_time:
        return 0
    end = parse_time(job.failed_at) if job.failed_at else now
    return max(0, int((end - parse_time(job.start_time)).total_seconds()))


def _succeed(status: TrainingStatus, spec: TrainingSpec, result: JobResult | None,
             generation: int | None, now: datetime, settings: OperatorSettings) -> None:
    steps = (result and result.steps_completed) or spec.number_of_steps
    status.phase = "Succeeded"
    status.completion_time = stamp(now)
    _add_artifacts(status, result)
    status.result_url = result.result_url if result else None
    status.progress = Progress(step=steps, total_steps=spec.number_of_steps, percent=100.0,
                               summary=f"{steps}/{spec.number_of_steps}",
                               stage=status.progress.stage if status.progress else None,
                               loss=status.progress.loss if status.progress else None,
                               steps_per_second=status.progress.steps_per_second
                               if status.progress else None,
                               last_update_time=stamp(now))
    set_condition(status, "Training", False, "Completed",
                  (result and result.message) or "training completed", generation, now)
    set_condition(status, "Succeeded", True, "Succeeded", "the LoRA is ready", generation, now)
    drop_condition(status, "Running")
    status.retry = None
    if status.billing is None:  # billed once per resource, whatever replays happen
        units = billable_units(steps, succeeded=True)
        status.billing = Billing(units=units, steps=steps, billed_time=stamp(now),
                                 cost=str(cost(units, settings.price_per_unit)))


def _note_captions(status: TrainingStatus, spec: TrainingSpec, result: JobResult | None,
                   generation: int, now: datetime) -> None:
    """`CaptionsComplete` from the prepare stage's counts (a result without counts, from a
    trainer that did not report them, leaves it unset)."""
    if result is None or not result.samples:
        return
    if result.uncaptioned_samples:
        set_condition(status, "CaptionsComplete", False, "UncaptionedSamples",
                      uncaptioned_warning(result.uncaptioned_samples, result.samples,
                                          spec.trigger_phrase), generation, now)
    else:
        set_condition(status, "CaptionsComplete", True, "AllCaptioned",
                      f"all {result.samples} training samples have a caption", generation, now)


def _add_artifacts(status: TrainingStatus, result: JobResult | None) -> None:
    if result is None:
        return
    merged = {**(status.artifacts.model_dump(exclude_none=True) if status.artifacts else {}),
              **result.artifacts.model_dump(exclude_none=True)}
    status.artifacts = Artifacts(**merged) if merged else status.artifacts
    if result.model_version:  # the version the trainer read from the model's files
        status.model_version = result.model_version
    if result.validation is not None:  # the final figures, whatever progress was last read
        status.validation = result.validation


def _suspend(observed: Observed, status: TrainingStatus, plan: Plan, stage: str,
             job: JobView | None, generation: int | None) -> None:
    """Hold the active Job; a Job not yet made waits for the resume (so Kueue cannot
    admit it meanwhile)."""
    status.phase = "Suspended"
    drop_condition(status, "Running")
    if job is None:
        message = f"suspended; the {stage} Job is created when the training resumes"
    elif job.queue:
        if not is_true(status, "Suspended"):
            if job.name in observed.effects.no_workload:  # not made by Kueue yet: again soon
                plan.requeue_after = 1.0
                return
            plan.activate[job.name] = False
        message = f"Job {job.name} suspended: its Kueue Workload is deactivated"
    else:
        if not job.suspended:
            plan.suspend[job.name] = True
        message = f"Job {job.name} suspended"
    set_condition(status, "Suspended", True, "Suspended", message, generation, observed.now)


def _resume(observed: Observed, status: TrainingStatus, plan: Plan, job: JobView | None,
            generation: int | None) -> None:
    if job is not None and job.queue:
        plan.activate[job.name] = True  # Kueue admits it again and resumes the Job
    elif job is not None and job.suspended:
        plan.suspend[job.name] = False
    message = f"Job {job.name} resumed" if job is not None else "resumed"
    set_condition(status, "Suspended", False, "Resumed", message, generation, observed.now)


def _create(observed: Observed, spec: TrainingSpec, status: TrainingStatus, plan: Plan, stage: str,
            settings: OperatorSettings) -> None:
    """Ask for the stage's Job, unless a refused one waits for its retry time."""
    now, generation = observed.now, observed.training["metadata"].get("generation")
    retry = status.retry if status.retry is not None and status.retry.stage == stage else None
    refusal = observed.effects.refusal
    if refusal is not None and refusal.stage == stage and refusal.transient:
        plan.requeue_after = refusal.retry_after or settings.job_retry_delay
        return
    if refusal is not None and refusal.stage == stage:
        attempts = (retry.attempts if retry else 0) + 1
        if refusal.final:
            set_condition(status, "JobCreated", False, "JobRejected", refusal.message,
                          generation, now)
            _fail(status, "JobRejected",
                  f"the API rejected the {stage} Job: {refusal.message}", generation, now)
            return
        delay = min(settings.job_retry_max_delay,
                    settings.job_retry_delay * 2 ** (attempts - 1))
        status.retry = Retry(stage=stage, attempts=attempts,
                             next_attempt_time=later(now, delay))
        reason, what = (("QuotaExceeded", "waiting for quota") if refusal.quota
                        else ("JobRefused", f"the API refused the {stage} Job"))
        set_condition(status, "JobCreated", False, reason,
                      f"{what}: {refusal.message} (try {attempts}; next in {delay:.0f} s)",
                      generation, now)
        plan.requeue_after = delay
        return
    if retry is not None and retry.next_attempt_time \
            and parse_time(retry.next_attempt_time) > now:
        plan.requeue_after = (parse_time(retry.next_attempt_time) - now).total_seconds()
        return
    deadline_left = None
    restarts = status.restarts
    if stage == "train" and restarts and restarts.replacing \
            and spec.active_deadline_seconds is not None:
        # a restarted gang's Job gets what its predecessors left of the deadline
        deadline_left = spec.active_deadline_seconds - restarts.active_seconds
        if deadline_left <= 0:
            status.restarts = restarts.model_copy(update={"replacing": None})
            _fail(status, "DeadlineExceeded", f"the training ran past its "
                  f"activeDeadlineSeconds ({spec.active_deadline_seconds} s) over "
                  f"{restarts.failures + restarts.disruptions} restart(s) of the gang",
                  generation, now)
            return
    if stage == "train" and spec.nodes > 1:
        plan.services.append(build_service(observed.training, settings))
    plan.create.append(build_job(stage, observed.training, spec, settings, deadline_left))
