"""`ltx-extend validate` and `ltx-extend crd` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ltx_contract.outcomes import ExitCode
from ltx_trainer.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.json"))

BROKEN = """\
apiVersion: ltx-training.io/v1alpha1
kind: LtxExtendTraining
metadata:
  name: broken
spec:
  trainingDataUrl: https://example.com/clips.zip
  conditioningFrames: 12
"""


def test_examples_validate(capsys):
    assert len(EXAMPLES) >= 3
    assert main(["validate", *map(str, EXAMPLES)]) == ExitCode.SUCCESS
    out = capsys.readouterr().out
    assert out.count(": valid") == len(EXAMPLES)
    assert "bills 2000 units ($12.20) if it succeeds, 0 if it fails" in out


def test_broken_resource_is_rejected_with_a_clear_message(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    assert main(["validate", str(broken)]) == ExitCode.INVALID_INPUT
    err = capsys.readouterr().err
    assert f"{broken}: LtxExtendTraining/broken is invalid:" in err
    assert "- spec.conditioningFrames (12) must be a multiple of 8 (8, 16, 24, …)" in err
    assert "Traceback" not in err


def test_snapping_is_reported(tmp_path, capsys):
    request = tmp_path / "request.json"
    request.write_text('{"training_data_url": "s3://b/c.zip", "number_of_frames": 96}')
    assert main(["validate", str(request)]) == ExitCode.SUCCESS
    assert "numberOfFrames 96 is snapped down to 89 (8k+1 frames)" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "message"), [
    ("a: [unclosed", "in.yaml: is not valid YAML: while parsing a flow sequence"),
    ("", "holds no document"),
    ("- 1\n- 2\n", "spec must be a mapping of fields"),
])
def test_unreadable_input_is_named(tmp_path, capsys, content, message):
    path = tmp_path / "in.yaml"
    path.write_text(content)
    assert main(["validate", str(path)]) == ExitCode.INVALID_INPUT
    assert message in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == ExitCode.INVALID_INPUT
    assert "nope.yaml: cannot be read: No such file or directory" in capsys.readouterr().err


def test_crd_command_reproduces_the_committed_crd_byte_for_byte(tmp_path):
    script = Path(sys.executable).parent / "ltx-extend"
    out = subprocess.run([str(script), "crd"], capture_output=True, check=True).stdout
    assert out == (ROOT / "crds" / "ltxextendtrainings.yaml").read_bytes()


def test_crd_check_detects_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "crd.yaml"
    stale.write_text((ROOT / "crds" / "ltxextendtrainings.yaml").read_text() + "# edited\n")
    assert main(["crd", "--check", str(stale)]) == ExitCode.INTERNAL_ERROR
    assert "is stale" in capsys.readouterr().err
    assert main(["crd", "--output", str(stale)]) == ExitCode.SUCCESS
    assert main(["crd", "--check", str(stale)]) == ExitCode.SUCCESS


def test_sample_data_and_local_prepare(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "demo")]) == ExitCode.SUCCESS
    spec = tmp_path / "demo" / "sample-training.yaml"
    assert main(["validate", str(spec)]) == ExitCode.SUCCESS
    work = tmp_path / "work"
    assert main(["prepare", str(spec), "--work", str(work)]) == ExitCode.SUCCESS
    out = capsys.readouterr().out
    assert "prepared 12 sample(s) of 25 frames at 24 fps, 512×512, with audio; " \
           "1 validation clip(s)" in out
    assert (work / "dataset" / "manifest.json").is_file()
    assert (work / "debug_dataset.zip").is_file()


def test_prepare_reports_the_outcome_class(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text('{"training_data_url": "file:///nonexistent/clips.zip"}')
    assert main(["prepare", str(spec), "--work", str(tmp_path / "w")]) == \
        ExitCode.DOWNLOAD_FAILURE
    assert "prepare failed (DownloadFailed): could not read the training data" in \
        capsys.readouterr().err


def test_path_arguments_take_plain_paths_and_file_urls(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "request.json"
    spec.write_text('{"training_data_url": "s3://b/c.zip"}')
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "request.json", spec.as_uri(), str(spec)]) == ExitCode.SUCCESS
    assert capsys.readouterr().out.count(": request: valid") == 3
    with pytest.raises(SystemExit) as refused:
        main(["validate", "s3://b/request.json"])
    assert refused.value.code == ExitCode.USAGE
    assert "'s3://b/request.json' is not a local path or file:// URL" in capsys.readouterr().err


def test_a_store_that_is_neither_a_folder_nor_a_bucket_is_a_usage_error(tmp_path, capsys):
    spec = tmp_path / "request.json"
    spec.write_text('{"training_data_url": "s3://b/c.zip"}')
    assert main(["train", str(spec), "--output", "gs://bucket/x"]) == ExitCode.USAGE
    assert main(["train", str(spec), "--output", "file://relative/out"]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert "--output: the artifact store must be a folder, a file:// or an s3://bucket URL, " \
        "not 'gs://bucket/x'" in captured.err
    assert "is not a file:///absolute/path URL (write a plain path for a relative folder)" in \
        captured.err
    assert captured.out == ""  # refused before anything else is said or done
    assert not (tmp_path / "relative").exists()
