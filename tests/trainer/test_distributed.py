"""Data-parallel training on CPU ranks (gloo), through torch's elastic launcher.

One two-rank `ltx-extend train --processes 2` run, resumed from the checkpoint of one
process accumulating two samples per step and with a rank killed after its first own
checkpoint, is shared by the assertions on restarts, billing, progress, what each rank
trained, which process wrote what, the equivalence with that one process, and resuming at
another size either way; a two-rank `job train` shows a rank's invalid input ending the
run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ltx_contract.outcomes import ExitCode
from ltx_contract.spec import parse_spec
from ltx_trainer.training.checkpoints import TrainingState
from ltx_trainer.training.launch import free_port
from ltx_trainer.training.lora import adapter_state
from ltx_trainer.training.trainer import Trainer, TrainSettings, draw

from harness.media_factory import make_clip

CLI = str(Path(sys.executable).parent / "ltx-extend")
GUARD = Path(__file__).parents[1] / "harness" / "write_guard"
CPU = torch.device("cpu")
STEPS, EVERY = 100, 20
RANK_LINE = re.compile(r"rank (\d+) of 2 \(node 0, local rank \d+, pid (\d+)\)")


def _request(archive: Path) -> dict:
    return {"trainingDataUrl": archive.as_uri(), "numberOfSteps": STEPS, "numberOfFrames": 25,
            "resolution": "low", "aspectRatio": "16:9", "rank": 8, "learningRate": 2e-4}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ranks-data")
    archive = root / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2):
            z.write(make_clip(root / f"c{i}.mp4", 1.2, fps=24, size=(160, 96),
                              tone_hz=300.0 * (i + 1)), f"c{i}.mp4")
    return archive


def _workers(launcher: int) -> list[int]:
    """The launcher's rank processes (interpreters started by `spawn`)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    return [int(pid) for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _steps_recorded(out: Path) -> int:
    for result in out.glob("local/door/*/result-train.json"):
        try:
            return json.loads(result.read_text())["stepsCompleted"]
        except (ValueError, KeyError):
            return 0
    return 0


@pytest.fixture(scope="module")
def two_ranks(archive, tiny_model, tmp_path_factory):
    """One process accumulating two samples per step trains 100 steps; its checkpoint at
    step 20 is planted in a run folder where `ltx-extend train --processes 2` resumes it on
    two ranks, and one rank is killed after their first checkpoint."""
    from ltx_trainer.dataset import FetchPolicy
    from ltx_trainer.stages.context import JobContext
    from ltx_trainer.stages.dispatch import run_stage
    from ltx_trainer.stages.local import local_run_id
    from ltx_trainer.store import open_store

    root = tmp_path_factory.mktemp("two-ranks")
    spec = parse_spec(_request(archive))
    out = root / "out"
    run = local_run_id(spec, "door", str(tiny_model.absolute()), 42, 32)
    assert run_stage("prepare", JobContext(spec=spec, store=open_store(str(out)), run=run,
                                           work_dir=root / "prepare",
                                           fetch=FetchPolicy(allow_file_urls=True))).succeeded
    alone = root / "alone"
    shutil.copytree(out / run / "dataset", alone / "dataset")
    settings = TrainSettings(max_sequence_length=32, checkpoint_every=EVERY, accumulate=2,
                             keep_checkpoints=STEPS // EVERY)
    trainer = Trainer(spec, tiny_model, alone, CPU, settings)
    reference = trainer.train(alone / "dataset")
    reference_lora = adapter_state(trainer.transformer)
    first = f"step-{EVERY:06d}"
    shutil.copytree(alone / "cache", out / run / "cache")
    shutil.copytree(alone / "checkpoints" / first, out / run / "checkpoints" / first)

    request = root / "door.json"
    request.write_text(json.dumps(_request(archive)))
    guard_log = root / "writes.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WRITE_GUARD_LOG": str(guard_log),
           "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    command = [CLI, "train", str(request), "--output", "out", "--model", str(tiny_model),
               "--max-sequence-length", "32", "--checkpoint-every", str(EVERY),
               "--processes", "2", "--progress-port", str(port)]
    log = root / "run.log"
    with log.open("w") as sink:
        launcher = subprocess.Popen(command, cwd=root, env=env, stdout=sink,
                                    stderr=subprocess.STDOUT)
    deadline, progress = time.time() + 600, []
    while _steps_recorded(out) < 2 * EVERY:
        assert launcher.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        progress += [_progress(port)]
        time.sleep(0.2)
    killed = _workers(launcher.pid)[-1]
    os.kill(killed, signal.SIGKILL)
    assert launcher.wait(timeout=600) == ExitCode.SUCCESS, log.read_text()[-3000:]
    return {"root": root, "run": out / run, "log": log.read_text(), "guard": guard_log,
            "killed": killed, "spec": spec, "progress": progress, "reference": reference,
            "reference_lora": reference_lora, "settings": settings}


def _progress(port: int) -> dict | None:
    """What the main rank serves on /progress (None while nothing listens)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=2) as reply:
            return json.loads(reply.read())
    except OSError:
        return None


def test_a_killed_rank_restarts_the_group_from_its_checkpoint_billed_once(two_ranks):
    text, run = two_ranks["log"], two_ranks["run"]
    resumed = re.findall(r"resumed from step-(\d+)", text)
    assert int(resumed[0]) == EVERY  # the one-process checkpoint, on two ranks
    assert len(resumed) == 2 and int(resumed[1]) >= 2 * EVERY  # the group started again
    result = json.loads((run / "result-train.json").read_text())
    assert (result["outcome"], result["stepsCompleted"], result["billableUnits"]) == (
        "Succeeded", STEPS, 100)
    assert "billable units: 100 ($0.61)" in text
    config = json.loads((run / "outputs" / "config.json").read_text())
    assert (config["ranks"], config["globalBatch"]) == (2, 2)
    started = {int(pid): int(rank) for rank, pid in RANK_LINE.findall(text)}
    assert two_ranks["killed"] in started and len(started) == 4  # two ranks, twice
    served = [p for p in two_ranks["progress"] if p and p.get("stage") == "training"]
    assert served and max(p["step"] for p in served) > EVERY  # from the main rank


def test_each_rank_trains_its_own_sample_and_both_are_recorded(two_ranks):
    state = TrainingState.load(two_ranks["run"] / "checkpoints" / f"step-{STEPS:06d}"
                               / "state.pt")
    index = json.loads((two_ranks["run"] / "cache" / "index.json").read_text())
    ids = [s["id"] for s in index["samples"]]
    assert len(state.batches) == STEPS
    for step, batch in enumerate(state.batches):
        # who recorded each slot: the one process, then each of the two ranks its own
        assert [rank for rank, _ in batch] == ([0, 0] if step < EVERY else [0, 1])
        assert [sid for _, sid in batch] == [ids[draw(42, step, slot, 2, len(ids))[0]]
                                             for slot in range(2)]
        assert batch[0][1] != batch[1][1]


def test_two_ranks_train_the_lora_of_one_process_accumulating_their_two_samples(
        two_ranks, tiny_model, tmp_path):
    run = two_ranks["run"]
    ranked = TrainingState.load(run / "checkpoints" / f"step-{STEPS:06d}" / "state.pt")
    one = two_ranks["reference_lora"]
    assert one.keys() == ranked.lora.keys()
    for key, value in one.items():
        torch.testing.assert_close(value, ranked.lora[key], rtol=0, atol=1e-5)
    assert two_ranks["reference"].losses == pytest.approx(ranked.losses, abs=1e-5)
    assert json.loads(two_ranks["reference"].config_file.read_text())["globalBatch"] == 2

    # a checkpoint of the two ranks resumes in one process, and ends where they did
    resumed_work = tmp_path / "resumed"
    for part in ("dataset", "cache"):
        shutil.copytree(run / part, resumed_work / part)
    last = f"step-{STEPS - EVERY:06d}"
    shutil.copytree(run / "checkpoints" / last, resumed_work / "checkpoints" / last)
    resumed = Trainer(two_ranks["spec"], tiny_model, resumed_work, CPU, two_ranks["settings"])
    resumed.train(resumed_work / "dataset")
    torch.testing.assert_close(adapter_state(resumed.transformer), ranked.lora, rtol=0,
                               atol=1e-5)
    final = load_file(run / "outputs" / "lora.safetensors")
    again = load_file(resumed_work / "outputs" / "lora.safetensors")
    assert final.keys() == again.keys()


def test_two_ranks_with_the_base_sharded_train_the_same_lora_and_resume_unsharded(
        two_ranks, archive, tiny_model, tmp_path):
    """`--shard-base`: FSDP2 shards the frozen base over the two ranks; the LoRA is the one
    process's accumulating the same samples, and its checkpoint (the optimizer's state
    keyed by name) resumes in one unsharded process to the same end. Both ranks sample
    the previews in step (each forward gathers the base); the main rank writes them."""
    import av
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ltx_trainer.logbook import read_table
    from ltx_trainer.stages.local import local_run_id

    request = tmp_path / "door.json"
    closing = archive.parent / "c0.mp4"
    request.write_text(json.dumps({**_request(archive), "validation": [
        {"prompt": "a tone, then a door", "videoUrl": closing.as_uri()}]}))
    job = subprocess.run(
        [CLI, "train", str(request), "--output", "out", "--model", str(tiny_model),
         "--max-sequence-length", "32", "--checkpoint-every", "50", "--processes", "2",
         "--shard-base", "--progress-port", "0", "--preview-every", "50",
         "--preview-steps", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert job.returncode == ExitCode.SUCCESS, job.stderr[-3000:]
    assert "frozen base sharded over 2 ranks" in job.stderr
    spec = parse_spec(json.loads(request.read_text()))
    run = tmp_path / "out" / local_run_id(spec, "door", str(tiny_model.absolute()), 42, 32)
    with av.open(str(run / "outputs" / "validation_reel.mp4")) as reel:
        assert sum(1 for _ in reel.decode(video=0)) >= 25
    logs = EventAccumulator(str(run / "outputs" / "logs"), size_guidance={"images": 0})
    logs.Reload()
    assert [i.step for i in logs.Images("previews/reel")] == [50, STEPS]  # mid-run, the end
    # both ranks computed the validation loss in step (each forward gathers the base)
    assert "validation loss at step 50:" in job.stderr
    assert [r["step"] for r in read_table(run / "outputs" / "validation.csv")] == [50, STEPS]
    sharded = TrainingState.load(run / "checkpoints" / f"step-{STEPS:06d}" / "state.pt")
    for key, value in two_ranks["reference_lora"].items():
        torch.testing.assert_close(value, sharded.lora[key], rtol=0, atol=1e-5)
    assert (run / "outputs" / "lora.safetensors").is_file()

    work = tmp_path / "unsharded"
    for part in ("dataset", "cache"):
        shutil.copytree(run / part, work / part)
    half = f"step-{STEPS // 2:06d}"
    shutil.copytree(run / "checkpoints" / half, work / "checkpoints" / half)
    resumed = Trainer(spec, tiny_model, work, CPU, two_ranks["settings"])
    resumed.train(work / "dataset")
    torch.testing.assert_close(adapter_state(resumed.transformer), sharded.lora, rtol=0,
                               atol=1e-5)


def test_only_the_main_rank_writes_outputs_and_every_write_stays_in_the_work_folders(
        two_ranks):
    root, text = two_ranks["root"], two_ranks["log"]
    ranks = {int(pid): int(rank) for rank, pid in RANK_LINE.findall(text)}
    writes = [json.loads(line) for line in two_ranks["guard"].read_text().splitlines()]
    by_rank: dict[int, set[str]] = {0: set(), 1: set()}
    for write in writes:
        if write["pid"] in ranks:
            by_rank[ranks[write["pid"]]].add(write["path"])
    assert by_rank[0] and by_rank[1]  # both ranks ran under the guard
    store = str(root / "out" / "local")
    assert any(p.startswith(store) for p in by_rank[0])
    for path in by_rank[1]:
        assert not path.startswith(store), path  # nothing in the store
        assert "/outputs" not in path and "/checkpoints" not in path, path
    for write in writes:
        assert write["path"].startswith(str(root)) or write["path"].startswith("/dev/"), write


def test_a_rank_with_invalid_input_fails_the_whole_run_at_once_with_its_message(
        archive, tiny_model, tmp_path, s3_env):
    from ltx_trainer.dataset import FetchPolicy
    from ltx_trainer.stages.context import JobContext
    from ltx_trainer.stages.dispatch import run_stage
    from ltx_trainer.store import open_store

    s3_env.client().make_bucket("runs")
    spec, location, run = parse_spec(_request(archive)), "s3://runs/training", "team/door/uid-1"
    store = open_store(location)
    ctx = JobContext(spec=spec, store=store, run=run, work_dir=tmp_path / "prepare",
                     fetch=FetchPolicy(allow_file_urls=True))
    assert run_stage("prepare", ctx).succeeded
    broken = store.get_json(f"{run}/dataset/manifest.json")["samples"][1]  # rank 1's share
    store.put_bytes(b"not a video", f"{run}/dataset/{broken['video']}")
    termination = tmp_path / "termination-log"
    env = {**os.environ, "PET_NPROC_PER_NODE": "2", "PET_NNODES": "1", "PET_MAX_RESTARTS": "3",
           "PET_RDZV_ID": "uid-1"}
    job = subprocess.run(
        [CLI, "job", "train", "--spec-json", spec.to_json(), "--store", location, "--run", run,
         "--work", str(tmp_path / "work"), "--model", str(tiny_model), "--termination-log",
         str(termination), "--progress-port", "0", "--max-sequence-length", "32"],
        env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == ExitCode.INVALID_INPUT, job.stderr[-3000:]
    assert len(RANK_LINE.findall(job.stderr)) == 2  # started once: no restart spent on it
    message = json.loads(termination.read_text())
    assert message["reason"] == "InvalidInput" and message["billableUnits"] == 0
    assert f"the prepared sample {broken['id']}" in message["message"]
    assert "cannot be decoded" in message["message"]
    stored = store.get_json(f"{run}/result-train.json")
    assert (stored["reason"], stored["exitCode"]) == ("InvalidInput", 3)
    assert not store.keys(f"{run}/checkpoints/") and not store.keys(f"{run}/outputs/")


def test_the_launcher_reads_torchruns_settings_and_refuses_bad_ones():
    from ltx_trainer.training.distributed import World
    from ltx_trainer.training.launch import Ranks

    assert Ranks.from_env({}).total == 1  # no settings: one rank, in this process
    two_nodes = Ranks.from_env({
        "PET_NPROC_PER_NODE": "4", "PET_NNODES": "2", "JOB_COMPLETION_INDEX": "1",
        "PET_RDZV_ENDPOINT": "train-0.train:29400", "PET_RDZV_ID": "uid-1",
        "PET_MAX_RESTARTS": "5"})
    assert (two_nodes.total, two_nodes.node_rank, two_nodes.endpoint, two_nodes.run_id,
            two_nodes.max_restarts, two_nodes.backend) == (
        8, 1, "train-0.train:29400", "uid-1", 5, "c10d")
    with pytest.raises(ValueError, match="PET_RDZV_ENDPOINT"):
        Ranks.from_env({"PET_NNODES": "2", "PET_NODE_RANK": "0"})
    with pytest.raises(ValueError, match=r"PET_NODE_RANK \(2\) below PET_NNODES"):
        Ranks.from_env({"PET_NNODES": "2", "PET_NODE_RANK": "2", "PET_RDZV_ENDPOINT": "h:1"})
    with pytest.raises(ValueError, match="PET_NPROC_PER_NODE must be a whole number"):
        Ranks.from_env({"PET_NPROC_PER_NODE": "four"})

    # the writer is local rank 0 of node 0, whatever global rank the rendezvous gave it
    agent = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    assert World.from_env({**agent, "PET_NODE_RANK": "0"}).is_main
    assert not World.from_env({**agent, "PET_NODE_RANK": "1"}).is_main
    assert World.from_env({**agent, "PET_NODE_RANK": "1"}).is_local_main
    assert World.from_env({}) == World() and World().is_main and not World().distributed


def test_processes_must_be_a_positive_count(capsys):
    from ltx_trainer.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["train", "spec.yaml", "--processes", "0"])
    assert refused.value.code == ExitCode.USAGE
    assert "--processes must be a whole number of 1 or more, not '0'" in capsys.readouterr().err
