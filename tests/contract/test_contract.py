"""The contract package: the operator depends on it alone; its documents round-trip."""

import json
import subprocess
import sys

from ltx_contract.progress import ProgressReport
from ltx_contract.result import MAX_TERMINATION_BYTES, JobResult


def test_operator_imports_nothing_from_the_trainer():
    code = ("import sys, ltx_operator.handlers, ltx_operator.main, ltx_operator.jobs; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout.replace("'", '"'))
    assert "ltx_contract" in loaded
    assert "ltx_trainer" not in loaded and "torch" not in loaded


def test_job_result_round_trips_through_the_termination_message():
    result = JobResult(stage="train", outcome="Succeeded", reason="Succeeded", message="ok",
                       steps_completed=120, billable_units=120)
    result.artifacts.lora_file = "s3://b/x/lora.safetensors"
    result.download_urls.lora_file = "https://example/presigned"
    text = result.termination_message()
    assert json.loads(text)["stepsCompleted"] == 120
    assert "presigned" not in text  # the links stay in the store's copy
    back = JobResult.from_termination_message(text)
    assert back is not None and back.artifacts.lora_file == result.artifacts.lora_file
    assert back.download_urls.lora_file is None


def test_termination_message_fits_in_four_kib_and_crash_logs_are_not_results():
    long = JobResult(stage="prepare", outcome="Failed", reason="InvalidInput", message="x" * 9000)
    assert len(long.termination_message().encode()) <= MAX_TERMINATION_BYTES
    assert JobResult.from_termination_message("Traceback (most recent call last): …") is None
    assert JobResult.from_termination_message(None) is None


def test_progress_report_speaks_the_status_names():
    wire = ProgressReport(stage="training", step=3, total_steps=10, loss=0.5).to_dict()
    assert {"totalSteps", "stepsPerSecond", "etaSeconds"} <= wire.keys()
    assert ProgressReport.model_validate(wire).total_steps == 10
