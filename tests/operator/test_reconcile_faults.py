"""The reconcile under the soak's faults: stale indexes after cut watches and restarts."""

from __future__ import annotations

import json
from dataclasses import replace

from test_reconcile import job, pod, run, training, training_status

from ltx_operator.observe import pods_to_list

RESULT = {"outcome": "Succeeded", "stepsCompleted": 100, "resultUrl": "https://s/r.json",
          "artifacts": {"loraFile": "s3://runs/x/lora.safetensors"}}


def test_a_completed_job_takes_its_result_from_the_pod_that_succeeded():
    """A preempted pod's end is in the index, its successor's not yet (the pod watch was
    cut): the Job says Complete, and the result is the successor's, listed from the API,
    never the preempted pod's empty message."""
    jobs = {"train": job("train", finished=("Complete", "Completed", ""))}
    preempted = replace(pod("train", "Failed", None, code=137, reason="Error"),
                        name="door-train-a", created="2026-01-01T11:30:00Z",
                        disrupted=("PreemptionByScheduler", ""))
    succeeded = replace(pod("train", "Succeeded", RESULT), name="door-train-b",
                        created="2026-01-01T11:40:00Z")
    assert pods_to_list(training(training_status()), jobs, [preempted]) == ["door-train"]
    stale = run(training(training_status()), jobs, [preempted])
    assert stale.unobserved == ["door-train"] and stale.status.phase != "Succeeded"
    plan = run(training(training_status()), jobs, [preempted, succeeded],
               listed=frozenset({"door-train"}))
    assert plan.status.phase == "Succeeded" and plan.status.result_url == "https://s/r.json"
    assert plan.status.artifacts.lora_file == "s3://runs/x/lora.safetensors"
    assert plan.status.billing.units == 100
    assert json.loads(succeeded.terminated[2])["resultUrl"] == plan.status.result_url
