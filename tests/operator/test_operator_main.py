"""`ltx-operator` itself: its settings and its logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from ltx_operator import controller


def test_json_logs_name_the_resource(capsys):
    from ltx_operator.main import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json")
        controller.log_about({"metadata": {"namespace": "team", "name": "door", "uid": "u-1"}},
                             "train Job %s created", "door-train")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    record = json.loads(line)
    assert record["message"] == "train Job door-train created"
    assert record["severity"] == "info"
    assert (record["object"]["namespace"], record["object"]["name"]) == ("team", "door")


def test_bad_settings_are_refused_by_name_without_a_trace():
    cli = str(Path(sys.executable).parent / "ltx-operator")
    done = subprocess.run([cli], capture_output=True, text=True, timeout=60,
                          env={"LTX_OPERATOR_TRAIN_TOLERATIONS": "[{key: gpu}",
                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "LTX_OPERATOR_TRAIN_TOLERATIONS is not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([cli], capture_output=True, text=True, timeout=60,
                          env={"LTX_OPERATOR_GPU_COUNT": "0", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "LTX_OPERATOR_GPU_COUNT ('0'): input should be greater than or equal to 1" \
        in done.stderr
    assert "Traceback" not in done.stderr
