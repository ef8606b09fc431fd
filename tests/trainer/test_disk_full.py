"""A stage whose work folder fills up: the result says so in plain words, names what to
change, bills 0 and is not retried (another attempt fills the same disk)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ltx_contract.outcomes import ExitCode

from harness.kubelet import _on_tmpfs
from harness.media_factory import make_clip

CLI = str(Path(sys.executable).parent / "ltx-extend")
#: exit codes the Jobs' pod failure policy fails at once (see ltx_operator.jobs)
FAIL_AT_ONCE = {int(ExitCode.USAGE), int(ExitCode.INVALID_INPUT)}


def test_a_full_work_disk_fails_the_stage_in_plain_words(tmp_path):
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2):
            clip = make_clip(tmp_path / f"c{i}.mp4", 1.2, fps=24, size=(160, 96))
            z.write(clip, clip.name)
    spec = {"trainingDataUrl": archive.as_uri(), "numberOfSteps": 100, "numberOfFrames": 25,
            "resolution": "low", "aspectRatio": "16:9", "withAudio": True}
    work, log = tmp_path / "work", tmp_path / "termination-log"
    # the pod's temporary folder is in its work folder, on the full disk
    work.mkdir()
    command = [*_on_tmpfs(work, 32 * 1024), CLI, "job", "prepare", "--spec-json",
               json.dumps(spec), "--store", str(tmp_path / "store"), "--run", "team/full/u1",
               "--work", str(work), "--termination-log", str(log), "--allow-file-urls",
               "--progress-port", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    message = json.loads(log.read_text())
    assert message["outcome"] == "Failed" and message["billableUnits"] == 0
    assert message["reason"] == "DiskFull", message
    assert "disk" in message["message"] and str(work) not in message["message"], message
    assert done.returncode in FAIL_AT_ONCE
    stored = json.loads((tmp_path / "store" / "team/full/u1/result-prepare.json").read_text())
    assert stored["reason"] == "DiskFull"


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_a_result_reaches_the_store_with_no_room_for_temporary_files(kind, tmp_path,
                                                                     monkeypatch, request):
    """The result document goes up from memory: the work disk (the pod's temporary
    folder) may be the very thing that is full."""
    import tempfile

    from ltx_trainer.store import FileStore, S3Store

    if kind == "folder":
        store = FileStore(tmp_path / "store")
    else:
        s3_server = request.getfixturevalue("s3_server")
        client = s3_server.client()
        if not client.bucket_exists("results"):
            client.make_bucket("results")
        store = S3Store("results", "runs", client)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "full"))  # no such folder
    store.put_json("team/a/u/result-train.json", {"reason": "DiskFull"})
    monkeypatch.undo()
    assert store.get_json("team/a/u/result-train.json") == {"reason": "DiskFull"}
