"""The pure reconcile, without an API server: observed state in, plan and status out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from ltx_contract.progress import ProgressReport
from ltx_operator.observe import pods_to_list, progress_source
from ltx_operator.observed import Effects, JobView, Observed, PodView, Refusal
from ltx_operator.reconcile import reconcile
from ltx_operator.settings import OperatorSettings
from ltx_operator.status import dump_status, parse_status
from ltx_operator.transitions import transitions

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(store_url="s3://runs", model_claim_name="models", metrics_port=0,
                            job_retry_delay=10, job_retry_max_delay=60)
SPEC = {"trainingDataUrl": "s3://d/c.zip", "numberOfSteps": 300}


def training(status: dict | None = None, spec: dict | None = None,
             labels: dict | None = None) -> dict:
    return {"apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
            "metadata": {"name": "door", "namespace": "team", "uid": "u-1", "generation": 1,
                         "resourceVersion": "7", "labels": labels or {},
                         "creationTimestamp": "2026-01-01T11:00:00Z"},
            "spec": spec or SPEC, "status": status or {}}


def job(stage: str, finished: tuple | None = None, suspended: bool = False,
        queue: str | None = None) -> JobView:
    return JobView(name=f"door-{stage}", stage=stage, uid=f"uid-{stage}", suspended=suspended,
                   queue=queue, finished=finished)


def pod(stage: str, phase: str = "Running", result: dict | None = None, code: int = 0,
        reason: str = "Completed", **extra) -> PodView:
    ended = (code, reason, json.dumps(result) if result else "") \
        if phase in ("Succeeded", "Failed") else None
    return PodView(name=f"door-{stage}-x", job=f"door-{stage}", stage=stage,
                   created="2026-01-01T11:30:00Z", phase=phase, ip="10.0.0.9",
                   terminated=ended, **extra)


def run(body: dict, jobs: dict | None = None, pods: list | None = None, now: datetime = NOW,
        settings: OperatorSettings = SETTINGS, **kwargs):
    return reconcile(Observed(body, jobs or {}, pods or [], now, **kwargs), settings)


def written(plan) -> dict:
    return dump_status(plan.status)


def conditions(plan) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in plan.status.conditions}


def test_a_new_training_asks_for_its_prepare_job_and_is_pending_until_it_exists():
    plan = run(training())
    (manifest,) = plan.create
    assert manifest["metadata"]["name"] == "door-prepare"
    assert manifest["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["job",
                                                                               "prepare"]
    assert plan.status.phase == "Pending" and plan.status.jobs is None
    assert conditions(plan)["Validated"] == ("True", "Valid")
    assert plan.status.effective.number_of_frames == 89
    assert plan.status.effective.model == "pvc://models"
    created = Observed(training(), {}, [], NOW).with_effects(
        Effects(created={"prepare": job("prepare")}))
    plan = reconcile(created, SETTINGS)
    assert not plan.create
    assert plan.status.phase == "Pending" and plan.status.jobs.prepare == "door-prepare"
    assert conditions(plan)["Running"] == ("False", "JobPending")
    assert [e.reason for e in transitions(run(training()).status, plan.status)] == [
        "PrepareStarted"]
    running = run(training(written(plan)), {"prepare": job("prepare")}, [pod("prepare")])
    assert running.status.phase == "Preparing"
    assert conditions(running)["Running"] == ("True", "Running")


def test_an_invalid_spec_or_no_model_fails_at_once_without_a_job_or_a_bill():
    plan = run(training(spec={"trainingDataUrl": "s3://d/c.zip", "conditioningFrames": 12}))
    assert not plan.create and plan.status.phase == "Failed"
    assert conditions(plan)["Failed"][1] == "InvalidSpec"
    assert conditions(plan)["Validated"][0] == "False"
    assert plan.status.billing.units == 0

    # a name no Service may take (a CRD older than the rule let it in): no Job, no bill
    dotted = training(spec={**SPEC, "nodes": 2})
    dotted["metadata"]["name"] = "door.v2"
    plan = run(dotted)
    assert not plan.create and plan.status.phase == "Failed"
    assert conditions(plan)["Validated"] == ("False", "InvalidSpec")
    assert plan.status.conditions[0].message.startswith(
        "metadata.name ('door.v2') must be at most 54 characters")
    assert plan.status.billing.units == 0

    no_model = SETTINGS.model_copy(update={"model_claim_name": None})
    plan = run(training(), settings=no_model)
    assert not plan.create and plan.status.phase == "Failed"
    failed = next(c for c in plan.status.conditions if c.type == "Failed")
    assert failed.reason == "NoBaseModel" and "spec.model" in failed.message
    assert "model.claimName" in failed.message and plan.status.billing.units == 0
    given = run(training(spec={**SPEC, "model": {"url": "s3://models/ltx-2.3"}}),
                settings=no_model)
    assert [m["metadata"]["name"] for m in given.create] == ["door-prepare"]


def preparing() -> dict:
    plan = reconcile(Observed(training(), {}, [], NOW).with_effects(
        Effects(created={"prepare": job("prepare")})), SETTINGS)
    return written(plan)


def test_a_finished_prepare_starts_the_train_job_with_its_result():
    done = job("prepare", finished=("Complete", "Completed", ""))
    result = {"outcome": "Succeeded", "message": "12 samples ready",
              "artifacts": {"debugDataset": "s3://runs/x/debug.zip"}}
    plan = run(training(preparing()), {"prepare": done},
               [pod("prepare", "Succeeded", result)])
    (manifest,) = plan.create
    assert manifest["metadata"]["name"] == "door-train"
    assert conditions(plan)["DatasetReady"] == ("True", "DatasetReady")
    assert plan.status.artifacts.debug_dataset == "s3://runs/x/debug.zip"


def test_uncaptioned_samples_are_a_condition_and_a_warning_event_naming_how_many():
    done = job("prepare", finished=("Complete", "Completed", ""))
    body = training(preparing(), spec={**SPEC, "triggerPhrase": "LEADIN"})
    result = {"outcome": "Succeeded", "message": "12 samples ready", "samples": 12,
              "uncaptionedSamples": 3}
    plan = run(body, {"prepare": done}, [pod("prepare", "Succeeded", result)])
    assert conditions(plan)["CaptionsComplete"] == ("False", "UncaptionedSamples")
    (captions,) = [c for c in plan.status.conditions if c.type == "CaptionsComplete"]
    assert captions.message.startswith("3 of 12 training samples have no caption")
    assert "'LEADIN' alone" in captions.message
    warned = [e for e in transitions(parse_status(preparing()), plan.status)
              if e.reason == "UncaptionedSamples"]
    assert len(warned) == 1 and warned[0].type == "Warning"
    assert warned[0].message == captions.message
    # every sample captioned: the condition says so, and no warning is posted
    result.update(uncaptionedSamples=0)
    plan = run(body, {"prepare": done}, [pod("prepare", "Succeeded", result)])
    assert conditions(plan)["CaptionsComplete"] == ("True", "AllCaptioned")
    assert not [e for e in transitions(parse_status(preparing()), plan.status)
                if e.reason == "UncaptionedSamples"]


def test_a_finished_job_whose_pod_was_not_seen_lists_its_pods_first():
    done = job("prepare", finished=("Complete", "Completed", ""))
    assert pods_to_list(training(preparing()), {"prepare": done}, []) == ["door-prepare"]
    plan = run(training(preparing()), {"prepare": done})
    assert plan.unobserved == ["door-prepare"] and not plan.create
    plan = run(training(preparing()), {"prepare": done}, listed=frozenset({"door-prepare"}))
    assert [m["metadata"]["name"] for m in plan.create] == ["door-train"]  # no result: go on


def training_status() -> dict:
    done = job("prepare", finished=("Complete", "Completed", ""))
    observed = Observed(training(preparing()), {"prepare": done},
                        [pod("prepare", "Succeeded", {"outcome": "Succeeded"})], NOW)
    plan = reconcile(observed.with_effects(Effects(created={"train": job("train")})),
                     SETTINGS)
    assert plan.status.phase == "Pending"  # until the train pod runs
    assert conditions(plan)["Training"] == ("True", "Started")
    return written(plan)


def test_success_bills_once_whatever_replays():
    jobs = {"prepare": job("prepare", finished=("Complete", "Completed", "")),
            "train": job("train", finished=("Complete", "Completed", ""))}
    result = {"outcome": "Succeeded", "stepsCompleted": 300, "resultUrl": "https://s/r.json",
              "modelVersion": "ltx-2.5",
              "artifacts": {"loraFile": "s3://runs/x/lora.safetensors"}}
    before = training(training_status())
    plan = run(before, jobs, [pod("train", "Succeeded", result)])
    status = plan.status
    assert status.phase == "Succeeded" and status.billing.units == 300
    assert status.billing.cost == "1.83" and status.progress.summary == "300/300"
    assert status.artifacts.lora_file.endswith("lora.safetensors")
    assert status.result_url == "https://s/r.json" and status.model_version == "ltx-2.5"
    assert [e.reason for e in transitions(run(before).status, status)] == ["Billed", "Succeeded"]
    # replayed with another result: the finished status and its bill stay as they are
    again = run(training(written(plan)), jobs,
                [pod("train", "Succeeded", {**result, "stepsCompleted": 50})])
    assert written(again) == written(plan)


def test_a_failed_train_job_fails_with_the_container_reason_and_bills_nothing():
    jobs = {"train": job("train", finished=("Failed", "BackoffLimitExceeded", ""))}
    plan = run(training(training_status()), jobs,
               [pod("train", "Failed", None, code=137, reason="OOMKilled")])
    assert conditions(plan)["Failed"] == ("True", "OOMKilled")
    assert plan.status.billing.units == 0 and "Running" not in conditions(plan)


def test_progress_is_written_only_when_it_changed():
    body = training(training_status())
    jobs = {"train": job("train")}
    assert progress_source(jobs, [pod("train")]) == "10.0.0.9"
    report = ProgressReport(stage="training", step=150, total_steps=300, loss=0.1)
    plan = run(body, jobs, [pod("train")], progress=report)
    assert (plan.status.progress.summary, plan.status.progress.percent) == ("150/300", 50.0)
    later = run(training(written(plan)), jobs, [pod("train")], progress=report,
                now=NOW + timedelta(minutes=1))
    assert written(later) == written(plan)  # same progress, same status (no new timestamp)


def test_a_refused_job_waits_longer_each_time_and_an_invalid_one_fails():
    quota = Refusal("prepare", 403, "Forbidden", 'jobs.batch "door-prepare" is forbidden: '
                    "exceeded quota: jobs, requested: count/jobs.batch=1, used: 4, limited: 4")
    first = reconcile(Observed(training(), {}, [], NOW).with_effects(Effects(refusal=quota)),
                      SETTINGS)
    assert not first.create and first.status.phase == "Pending"
    created = next(c for c in first.status.conditions if c.type == "JobCreated")
    assert (created.status, created.reason) == ("False", "QuotaExceeded")
    assert "exceeded quota" in created.message and first.requeue_after == 10
    assert (first.status.retry.attempts, first.status.retry.next_attempt_time) == (
        1, "2026-01-01T12:00:10.000000Z")
    assert [e.reason for e in transitions(run(training()).status, first.status)] == [
        "QuotaExceeded"]
    waiting = run(training(written(first)), now=NOW + timedelta(seconds=5))
    assert not waiting.create and waiting.requeue_after == 5  # not in a hot loop
    due = run(training(written(first)), now=NOW + timedelta(seconds=10))
    assert [m["metadata"]["name"] for m in due.create] == ["door-prepare"]
    second = reconcile(Observed(training(written(first)), {}, [], NOW + timedelta(seconds=10))
                       .with_effects(Effects(refusal=quota)), SETTINGS)
    assert second.status.retry.attempts == 2 and second.requeue_after == 20  # doubled
    made = reconcile(Observed(training(written(second)), {}, [], NOW + timedelta(seconds=30))
                     .with_effects(Effects(created={"prepare": job("prepare")})), SETTINGS)
    assert made.status.retry is None and made.status.phase == "Pending"
    assert next(c for c in made.status.conditions if c.type == "JobCreated").status == "True"

    invalid = Refusal("prepare", 422, "Invalid", 'Job.batch "door-prepare" is invalid: '
                      "spec.template.spec.containers[0].image: Required value")
    plan = reconcile(Observed(training(), {}, [], NOW).with_effects(Effects(refusal=invalid)),
                     SETTINGS)
    assert plan.status.phase == "Failed" and plan.status.billing.units == 0
    assert conditions(plan)["Failed"] == ("True", "JobRejected")
    assert conditions(plan)["JobCreated"] == ("False", "JobRejected")


def test_suspend_holds_the_active_job_the_way_its_manager_expects():
    suspended = {**SPEC, "suspend": True}
    plain = run(training(preparing(), spec=suspended), {"prepare": job("prepare")})
    assert plain.suspend == {"door-prepare": True} and not plain.activate
    assert plain.status.phase == "Suspended"
    # Kueue's Job: its Workload is deactivated, its suspend field is Kueue's
    queued = job("prepare", queue="gpus")
    kueue = run(training(preparing(), spec=suspended), {"prepare": queued})
    assert kueue.activate == {"door-prepare": False} and not kueue.suspend
    assert conditions(kueue)["Suspended"] == ("True", "Suspended")
    not_yet = reconcile(Observed(training(preparing(), spec=suspended), {"prepare": queued},
                                 [], NOW).with_effects(
        Effects(no_workload=frozenset({"door-prepare"}))), SETTINGS)
    assert "Suspended" not in conditions(not_yet) and not_yet.requeue_after
    resumed = run(training(written(kueue)),
                  {"prepare": job("prepare", suspended=True, queue="gpus")})
    assert resumed.activate == {"door-prepare": True} and not resumed.suspend
    assert conditions(resumed)["Suspended"] == ("False", "Resumed")
    # nothing is created while suspended, so Kueue cannot admit the next stage
    done = job("prepare", finished=("Complete", "Completed", ""))
    held = run(training(preparing(), spec=suspended), {"prepare": done},
               [pod("prepare", "Succeeded", {"outcome": "Succeeded"})])
    assert not held.create and held.status.phase == "Suspended"


def waiting(**pod_fields) -> tuple[str, str, str]:
    plan = run(training(preparing()), {"prepare": job("prepare")},
               [pod("prepare", **pod_fields)])
    running = next(c for c in plan.status.conditions if c.type == "Running")
    return plan.status.phase, running.reason, running.message


def test_the_phase_says_why_a_stage_waits():
    scheduler = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    assert waiting(phase="Pending", unschedulable=("Unschedulable", scheduler)) == (
        "Pending", "Unschedulable", scheduler)
    assert waiting(phase="Pending", waiting=("ImagePullBackOff", "Back-off pulling image")
                   ) == ("Pending", "ImagePullBackOff", "Back-off pulling image")
    phase, reason, message = waiting(phase="Pending", waiting=("ContainerCreating", ""))
    assert (phase, reason) == ("Pending", "PodPending") and "ContainerCreating" in message
    phase, reason, message = waiting(phase="Failed", code=137, reason="Error",
                                     disrupted=("PreemptionByScheduler", "preempted"))
    assert (phase, reason) == ("Pending", "Preempted") and "resumes" in message
    assert waiting(phase="Running")[:2] == ("Preparing", "Running")
    # Kueue holds the Job (suspended by Kueue, not by the user)
    plan = run(training(preparing()), {"prepare": job("prepare", suspended=True, queue="gpus")})
    assert plan.status.phase == "Pending" and not plan.suspend  # Kueue's to resume
    assert conditions(plan)["Running"] == ("False", "Queued")
    before = run(training(preparing()), {"prepare": job("prepare")}).status
    assert [(e.type, e.reason) for e in transitions(before, plan.status)] == [("Normal", "Queued")]


GANG = {**SPEC, "gpus": 2, "nodes": 2}


def gang_pod(index: int, phase: str = "Running", result: dict | None = None, code: int = 0,
             created: str = "2026-01-01T11:30:00Z", **extra) -> PodView:
    ended = (code, "Completed" if code == 0 else "Error", json.dumps(result) if result else "") \
        if phase in ("Succeeded", "Failed") else None
    return PodView(name=f"door-train-{index}-x{created[-3:-1]}", job="door-train",
                   stage="train", created=created, phase=phase, ip=f"10.0.0.{10 + index}",
                   terminated=ended, index=index, **extra)


def gang_status() -> dict:
    done = job("prepare", finished=("Complete", "Completed", ""))
    observed = Observed(training(preparing(), spec=GANG), {"prepare": done},
                        [pod("prepare", "Succeeded", {"outcome": "Succeeded"})], NOW)
    return written(reconcile(observed.with_effects(Effects(created={"train": job("train")})),
                             SETTINGS))


def test_a_gang_gets_its_headless_service_with_its_indexed_train_job():
    done = job("prepare", finished=("Complete", "Completed", ""))
    plan = run(training(preparing(), spec=GANG), {"prepare": done},
               [pod("prepare", "Succeeded", {"outcome": "Succeeded"})])
    (service,) = plan.services
    (manifest,) = plan.create
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert manifest["spec"]["completionMode"] == "Indexed"
    assert service["metadata"]["name"] == manifest["spec"]["template"]["spec"]["subdomain"]
    single = run(training(preparing()), {"prepare": done},
                 [pod("prepare", "Succeeded", {"outcome": "Succeeded"})])
    assert single.services == [] and len(single.create) == 1  # one node: no Service


def test_a_gang_reports_from_index_0_and_waits_for_every_pod():
    body, jobs = training(gang_status(), spec=GANG), {"train": job("train")}
    plan = run(body, jobs, [gang_pod(1), gang_pod(0)])
    assert progress_source(jobs, [gang_pod(1), gang_pod(0)]) == "10.0.0.10"  # rank 0's only
    assert conditions(plan)["Running"] == ("True", "Running") and plan.status.phase == "Training"
    pending = PodView(name="door-train-1-y", job="door-train", stage="train",
                      created="2026-01-01T11:31:00Z", phase="Pending", index=1,
                      unschedulable=("Unschedulable", "0/4 nodes have 2 free GPUs"))
    plan = run(body, jobs, [gang_pod(0), pending])
    assert conditions(plan)["Running"] == ("False", "Unschedulable")
    assert plan.status.phase == "Pending"


def test_a_gang_takes_its_result_from_index_0_and_bills_once():
    jobs = {"train": job("train", finished=("Complete", "Completed", ""))}
    result = {"outcome": "Succeeded", "stepsCompleted": 300,
              "artifacts": {"loraFile": "s3://runs/x/lora.safetensors"}}
    worker = {"stage": "train", "worker": True, "node": 1}
    body = training(gang_status(), spec=GANG)
    plan = run(body, jobs, [gang_pod(0, "Succeeded", result),
                            gang_pod(1, "Succeeded", worker, created="2026-01-01T11:40:00Z")])
    assert plan.status.phase == "Succeeded" and plan.status.billing.units == 300
    assert plan.status.artifacts.lora_file.endswith("lora.safetensors")
    # index 0's end not seen yet (only the other node's): its pods are listed first
    assert pods_to_list(body, jobs, [gang_pod(1, "Succeeded", worker)]) == ["door-train"]
    plan = run(body, jobs, [gang_pod(1, "Succeeded", worker)])
    assert plan.unobserved == ["door-train"] and plan.status.billing is None


def test_a_gang_fails_with_the_reason_of_the_pod_that_knew_it():
    jobs = {"train": job("train", finished=("Failed", "PodFailurePolicy", ""))}
    invalid = {"outcome": "Failed", "reason": "InvalidInput", "exitCode": 3,
               "message": "clip 3 has no audio track"}
    plan = run(training(gang_status(), spec=GANG), jobs, [
        gang_pod(1, "Failed", invalid, code=3),
        gang_pod(0, "Failed", None, code=143, created="2026-01-01T11:40:00Z")], listed=LISTED)
    assert conditions(plan)["Failed"] == ("True", "InvalidInput")
    failed = next(c for c in plan.status.conditions if c.type == "Failed")
    assert failed.message == "clip 3 has no audio track" and plan.status.billing.units == 0


def failed_gang(status: dict, uid: str = "uid-train", reason: str = "BackoffLimitExceeded",
                **extra) -> dict[str, JobView]:
    return {"train": JobView(name="door-train", stage="train", uid=uid, suspended=False,
                             queue=None, finished=("Failed", reason, ""), **extra)}


LISTED = frozenset({"door-train"})  # the failed Job's pods, listed from the API


def test_a_gang_whose_pod_failed_restarts_as_a_whole_and_counts_it():
    """A lost pod fails the gang's Job at once; the operator records the restart, deletes
    the Job with its pods and, once they are gone, makes a new one: every pod again,
    resuming from the checkpoint."""
    body = training(gang_status(), spec=GANG)
    lost = gang_pod(1, "Failed", None, code=137)
    # decided on the pods as the API has them, not on a watch that may lag
    assert pods_to_list(body, failed_gang(body), [gang_pod(0, "Running"), lost]) == [
        "door-train"]
    plan = run(body, failed_gang(body), [gang_pod(0, "Running"), lost])
    assert plan.unobserved == ["door-train"] and plan.status.restarts is None
    plan = run(body, failed_gang(body), [gang_pod(0, "Running"), lost], listed=LISTED)
    assert not plan.delete and not plan.create  # written first: deleted on the next pass
    assert plan.requeue_after == 0.1
    assert plan.status.phase == "Pending" and plan.status.billing is None
    assert not any(c.type == "Failed" for c in plan.status.conditions)
    restarts = plan.status.restarts
    assert (restarts.failures, restarts.disruptions, restarts.replacing) == (1, 0, "uid-train")
    assert conditions(plan)["Running"] == ("False", "Restarting")
    assert restarts.last_reason == (f"pod {lost.name} failed (exit code 137); the 2 pods start "
                                    "again from the last checkpoint (restart 1 of 3)")
    assert [(e.type, e.reason) for e in transitions(parse(body), plan.status)] == [
        ("Warning", "GangRestarted")]

    # the next pass deletes it; while it goes (foreground): counted once, not deleted twice
    again = training(written(plan), spec=GANG)
    plan = run(again, failed_gang(again), [lost])
    assert plan.delete == {"door-train": "uid-train"} and plan.status.restarts.failures == 1
    assert not transitions(parse(again), plan.status)
    plan = run(again, failed_gang(again, deleting=True), [lost, gang_pod(0, "Running")])
    assert plan.status.restarts.failures == 1 and not plan.delete and not plan.create
    message = next(c.message for c in plan.status.conditions if c.type == "Running")
    assert message.endswith("; waiting for pod(s) door-train-0-x00 to stop"), message

    # gone: the new Job (and its Service, which is there already) is asked for
    plan = run(again, {}, [lost])
    assert [m["metadata"]["name"] for m in plan.create] == ["door-train"]
    assert plan.create[0]["spec"]["completionMode"] == "Indexed"
    assert plan.status.phase == "Pending" and plan.status.restarts.replacing == "uid-train"

    # the successor: no longer replacing; the old Job's pods are not its pods
    successor = {"train": JobView(name="door-train", stage="train", uid="uid-train-2",
                                  suspended=False, queue=None, finished=None)}
    new_pods = [replace_uid(gang_pod(0, created="2026-01-01T11:45:00Z"), "uid-train-2"),
                replace_uid(gang_pod(1, created="2026-01-01T11:45:00Z"), "uid-train-2")]
    old = [replace_uid(lost, "uid-train")]
    plan = run(again, successor, [*old, *new_pods])
    assert plan.status.restarts.replacing is None and plan.status.restarts.failures == 1
    assert conditions(plan)["Running"] == ("True", "Running")
    assert plan.status.phase == "Training"
    assert progress_source(successor, [*old, *new_pods]) == "10.0.0.10"


def replace_uid(view: PodView, uid: str) -> PodView:
    return PodView(**{**vars(view), "job_uid": uid})


def parse(body: dict):
    from ltx_operator.status import parse_status

    return parse_status(body.get("status"))


def test_a_gang_restarts_as_soon_as_its_job_is_failing():
    """Kubernetes 1.31+ writes `Failed` once every pod has stopped; a pod on a node that is
    gone may take long: the gang's restart starts at `FailureTarget`."""
    body = training(gang_status(), spec=GANG)
    failing = {"train": JobView(name="door-train", stage="train", uid="uid-train",
                                suspended=False, queue=None, finished=None,
                                failing=("BackoffLimitExceeded", ""))}
    plan = run(body, failing, [gang_pod(0, "Running"), gang_pod(1, "Failed", code=137)],
               listed=LISTED)
    assert plan.status.restarts.replacing == "uid-train"
    assert conditions(plan)["Running"] == ("False", "Restarting")
    # a final exit: the training fails with its message once the Job has failed
    invalid = {"outcome": "Failed", "reason": "InvalidInput", "exitCode": 3,
               "message": "clip 3 has no audio track"}
    plan = run(body, failing, [gang_pod(0, "Running"), gang_pod(1, "Failed", invalid, code=3)],
               listed=LISTED)
    assert plan.status.restarts is None and plan.status.phase != "Failed"
    plan = run(body, failed_gang(body, reason="PodFailurePolicy"),
               [gang_pod(1, "Failed", invalid, code=3)], listed=LISTED)
    assert conditions(plan)["Failed"] == ("True", "InvalidInput")


def test_a_preempted_gang_restarts_without_counting_and_a_final_exit_fails_at_once():
    body = training(gang_status(), spec={**GANG, "backoffLimit": 0})
    preempted = gang_pod(0, "Failed", None, code=137,
                         disrupted=("PreemptionByScheduler", "a higher-priority pod"))
    plan = run(body, failed_gang(body, reason="PodFailurePolicy"), [preempted], listed=LISTED)
    restarts = plan.status.restarts
    assert (restarts.failures, restarts.disruptions) == (0, 1)  # backoffLimit 0 still holds
    assert "(PreemptionByScheduler: a higher-priority pod)" in restarts.last_reason
    assert restarts.last_reason.endswith("(not counted)")

    invalid = {"outcome": "Failed", "reason": "Diverged", "exitCode": 3,
               "message": "the loss became NaN at step 12"}
    plan = run(body, failed_gang(body, reason="PodFailurePolicy"),
               [gang_pod(1, "Failed", invalid, code=3)], listed=LISTED)
    assert not plan.delete and conditions(plan)["Failed"] == ("True", "Diverged")
    assert plan.status.billing.units == 0 and plan.status.restarts is None

    plan = run(body, failed_gang(body, reason="DeadlineExceeded"), [gang_pod(0, "Running")],
               listed=LISTED)
    assert not plan.delete and conditions(plan)["Failed"] == ("True", "DeadlineExceeded")


def test_a_gang_out_of_restarts_fails_and_says_how_many_it_had():
    status = {**gang_status(), "restarts": {"failures": 3, "disruptions": 1}}
    body = training(status, spec=GANG)
    plan = run(body, failed_gang(body), [gang_pod(1, "Failed", None, code=1)], listed=LISTED)
    assert not plan.delete and plan.status.phase == "Failed"
    failed = next(c for c in plan.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert failed.message.endswith("(after 3 restart(s) of the gang)")
    assert plan.status.billing.units == 0
    # one node: its Job retried the pod itself; its failure is final
    single = training(gang_status(), spec={**SPEC, "gpus": 2})
    plan = run(single, failed_gang(single), [pod("train", "Failed", code=1)], listed=LISTED)
    assert not plan.delete and plan.status.phase == "Failed"


def test_a_restarted_gang_gets_what_its_jobs_left_of_the_deadline():
    """The deadline counts the seconds the Jobs ran (as the Job controller does: from
    admission or resume), not the time they waited in a queue."""
    spec = {**GANG, "activeDeadlineSeconds": 3600}
    body = training(gang_status(), spec=spec)
    ran = failed_gang(body, start_time="2026-01-01T12:10:00Z",
                      failed_at="2026-01-01T12:50:00Z")  # queued 10 min, ran 40
    plan = run(body, ran, [gang_pod(1, "Failed", None, code=137)], listed=LISTED)
    assert plan.status.restarts.active_seconds == 2400
    again = training(written(plan), spec=spec)
    (manifest,) = run(again, {}, now=NOW + timedelta(hours=5)).create
    assert manifest["spec"]["activeDeadlineSeconds"] == 1200
    spent = training({**written(plan), "restarts": {**written(plan)["restarts"],
                                                   "activeSeconds": 3600}}, spec=spec)
    plan = run(spent, {})
    assert not plan.create and conditions(plan)["Failed"] == ("True", "DeadlineExceeded")
    assert plan.status.billing.units == 0 and plan.status.restarts.replacing is None


def test_the_validation_loss_reaches_the_status_from_progress_then_from_the_result():
    body = training(training_status())
    jobs = {"train": job("train")}
    validation = {"loss": 0.52, "step": 200, "bestLoss": 0.5, "bestStep": 100, "heldOut": True,
                  "windows": 3}
    report = ProgressReport.model_validate({"stage": "training", "step": 210,
                                            "totalSteps": 300, "validation": validation})
    plan = run(body, jobs, [pod("train")], progress=report)
    assert written(plan)["validation"] == validation
    assert "validation" not in written(run(body, jobs, [pod("train")]))  # none computed yet
    done = {"prepare": job("prepare", finished=("Complete", "Completed", "")),
            "train": job("train", finished=("Complete", "Completed", ""))}
    final = {**validation, "loss": 0.55, "step": 300}
    result = {"outcome": "Succeeded", "stepsCompleted": 300, "validation": final,
              "artifacts": {"loraFile": "s3://runs/x/lora.safetensors",
                            "loraBest": "s3://runs/x/lora_best.safetensors",
                            "validationLog": "s3://runs/x/validation.csv"}}
    finished = run(training(written(plan)), done, [pod("train", "Succeeded", result)])
    status = written(finished)
    assert status["validation"] == final  # the result's, not the last progress read
    assert status["artifacts"]["loraBest"].endswith("lora_best.safetensors")
    assert status["artifacts"]["validationLog"].endswith("validation.csv")
