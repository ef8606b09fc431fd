"""What a person sees with the real `kubectl` (the one `tests/harness/helm_binary.py` installs)
pointed at the API emulator: `kubectl get ltxt` and `kubectl describe ltxt` on the status
the operator writes from a trainer's progress and a finished training's result."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import kmock
import pytest
import pytest_asyncio
import yaml
from test_reconcile import job, pod, run, training, training_status, written

from ltx_contract.crd import PRINTER_COLUMNS
from ltx_contract.progress import ProgressReport
from ltx_contract.resource import Validation, human_duration

from harness import kube_api
from harness.kube_tables import TableServer, json_path
from harness.operator_cluster import NAMESPACE, TRAININGS, Cluster

CRD = Path(__file__).resolve().parents[2] / "crds" / "ltxextendtrainings.yaml"
KUBECTL = Path(sys.executable).parent / "kubectl"
ARTIFACTS = {"loraFile": "s3://runs/wall/outputs/lora.safetensors",
             "video": "s3://runs/wall/outputs/validation_reel.mp4",
             "lossChart": "s3://runs/wall/outputs/loss.png",
             "lossLog": "s3://runs/wall/outputs/loss.csv",
             "logs": "s3://runs/wall/outputs/logs"}


def statuses() -> dict[str, dict]:
    """A training halfway (the trainer reports 0.5 steps/s, 300 s to go) and a finished
    one, as the operator's reconcile writes them."""
    jobs = {"train": job("train")}
    report = ProgressReport(stage="training", step=150, total_steps=300, loss=0.1234,
                            steps_per_second=0.5, eta_seconds=300)
    report.validation = Validation(loss=0.4321, step=100, best_loss=0.4321, best_step=100,
                                   held_out=True, windows=2)
    running = run(training(training_status()), jobs, [pod("train")], progress=report)
    done = {"prepare": job("prepare", finished=("Complete", "Completed", "")),
            "train": job("train", finished=("Complete", "Completed", ""))}
    result = {"outcome": "Succeeded", "stepsCompleted": 300, "artifacts": ARTIFACTS,
              "validation": {"loss": 0.5, "step": 300, "bestLoss": 0.45, "bestStep": 250,
                             "heldOut": True, "windows": 2}}
    finished = run(training(written(running)), done, [pod("train", "Succeeded", result)])
    return {"door": written(running), "wall": written(finished)}


@pytest_asyncio.fixture
async def kubectl(tmp_path: Path):
    """Runs the real kubectl as a user of the emulated cluster: its stdout."""
    assert KUBECTL.exists(), f"no {KUBECTL}: `make install` puts it there"
    emulator = TableServer()
    async with emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        kube_api.declare(emulator)
        emulator.serve_crd(yaml.safe_load(CRD.read_text()))
        config = kube_api.write_kubeconfig(tmp_path / "kubeconfig", url, "a-user", NAMESPACE)

        async def kubectl(*argv: str) -> str:
            done = await asyncio.to_thread(
                subprocess.run, [str(KUBECTL), "--kubeconfig", str(config), *argv],
                capture_output=True, text=True, timeout=60,
                env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
            assert done.returncode == 0, done.stderr
            return done.stdout

        async with aiohttp.ClientSession() as session:
            cluster = Cluster(url, session)
            for name, status in statuses().items():
                await cluster.create(TRAININGS, {
                    "apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"trainingDataUrl": "s3://d/c.zip", "numberOfSteps": 300}})
                await cluster.request("PATCH", f"{TRAININGS}/{name}/status",
                                      {"status": status})
            yield kubectl


def rows(text: str) -> dict[str, dict[str, str]]:
    """kubectl's table, by name then column (a column starts where its heading does)."""
    header, *lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    table = [{n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)}
             for line in lines]
    return {row["NAME"]: row for row in table}


@pytest.mark.asyncio
async def test_get_shows_the_eta_and_the_age(kubectl):
    table = rows(await kubectl("get", "ltxt"))
    assert list(table["door"]) == ["NAME", "PHASE", "POD", "PROGRESS", "LOSS", "ETA",
                                   "UNITS", "AGE"]
    door, wall = table["door"], table["wall"]
    assert (door["PHASE"], door["POD"], door["PROGRESS"], door["LOSS"], door["ETA"]) == (
        "Training", "Running", "150/300", "0.1234", "5m")
    assert door["AGE"].endswith("s")  # created just now, written as kubectl writes ages
    assert (wall["PHASE"], wall["PROGRESS"], wall["UNITS"]) == ("Succeeded", "300/300", "300")
    assert wall["ETA"] == ""  # nothing left to wait for
    wide = rows(await kubectl("get", "ltxt", "-o", "wide"))
    assert {"REASON", "STEPS", "RANK", "AUDIO", "SUSPENDED"} <= wide["door"].keys()
    # the validation loss, latest and best step, only with -o wide
    assert "VALLOSS" not in table["door"] and "BESTSTEP" not in table["door"]
    assert (wide["door"]["VALLOSS"], wide["door"]["BESTSTEP"]) == ("0.4321", "100")
    assert (wide["wall"]["VALLOSS"], wide["wall"]["BESTSTEP"]) == ("0.5", "250")
    # kubectl's own JSONPath, on the objects themselves, reads what the columns show
    custom = ",".join(f"{c['name'].upper()}:{c['jsonPath']}" for c in PRINTER_COLUMNS
                      if c["type"] != "date")
    mine = rows(await kubectl("get", "ltxt", "-o", f"custom-columns=NAME:.metadata.name,"
                                                  f"{custom}"))
    for name in ("door", "wall"):
        shown = {k: v or "<none>" for k, v in wide[name].items() if k != "AGE"}
        assert mine[name] == shown, name  # custom-columns writes an empty cell as <none>


@pytest.mark.asyncio
async def test_describe_shows_the_last_progress_and_the_artifacts(kubectl):
    door = await kubectl("describe", "ltxt", "door")
    progress = door[door.index("  Progress:"):].splitlines()
    for line in ("Eta: 5m", "Eta Seconds: 300", "Loss: 0.1234", "Steps Per Second: 0.5",
                 "Summary: 150/300", "Stage: training"):
        assert any(_same(line, seen) for seen in progress), line
    wall = await kubectl("describe", "ltxt", "wall")
    artifacts = wall[wall.index("  Artifacts:"):]
    for key, url in (("Loss Chart", ARTIFACTS["lossChart"]), ("Loss Log", ARTIFACTS["lossLog"]),
                     ("Logs", ARTIFACTS["logs"]), ("Lora File", ARTIFACTS["loraFile"])):
        assert any(_same(f"{key}: {url}", seen) for seen in artifacts.splitlines()), key


def _same(expected: str, line: str) -> bool:
    """A describe line, whatever its indentation and alignment."""
    return " ".join(line.split()) == " ".join(expected.split())


def test_printer_paths_and_ages_read_as_the_api_server_reads_them():
    status = {"conditions": [{"type": "Running", "reason": "Unschedulable"},
                             {"type": "Failed", "reason": "OOMKilled"}]}
    assert json_path({"status": status}, '.status.conditions[?(@.type=="Failed")].reason') \
        == ["OOMKilled"]
    assert json_path({"status": {}}, ".status.progress.eta") == []
    # Kubernetes' duration.HumanDuration, which kubectl writes ages with
    assert [human_duration(s) for s in (0, 119, 150, 600, 12000, 30 * 3600, 76 * 3600,
                                        400 * 86400, 800 * 86400)] == [
        "0s", "119s", "2m30s", "10m", "3h20m", "30h", "3d4h", "400d", "2y70d"]
