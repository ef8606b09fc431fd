"""The images' lock files agree with pyproject.toml, and the suite runs on their versions."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {"operator.lock": PROJECT["dependencies"],
         "trainer.lock": PROJECT["dependencies"] + PROJECT["optional-dependencies"]["trainer"]}


def pins(lock: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / lock).read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_every_dependency_within_pyprojects_range(lock):
    pinned = pins(lock)
    for requirement in map(Requirement, LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        if name == "torch":  # from the CUDA index in the image, pinned in pyproject itself
            assert "torch" not in pinned and str(requirement.specifier).startswith("==")
            continue
        assert name in pinned, f"{lock} lacks {name}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside pyproject's {requirement}: "
            "run `make lock`")


def test_the_suite_runs_on_the_locked_versions():
    pinned = pins("trainer.lock")
    for name in ("diffusers", "transformers", "peft", "accelerate", "kopf", "pydantic"):
        try:
            installed = version(name)
        except PackageNotFoundError:  # pragma: no cover - the trainer extra is installed
            pytest.fail(f"{name} is not installed")
        assert installed == pinned[name], f"{name} {installed} installed, {pinned[name]} locked"
