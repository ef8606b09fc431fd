"""A small seeded soak: a few trainings through the whole product with every fault kind
injected at least once (the large one is `tests/benchmarks/soak.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from soak import soak
from soak_faults import PER_TRAINING

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]
API_FAULTS = ("api_500", "api_503", "api_429", "api_409", "watch_cut", "watch_gone")


async def test_a_small_soak_loses_nothing_and_bills_each_success_once(tiny_model, tmp_path):
    report = await soak(trainings=3, seed=1, pods=3, restart_every=(10, 25),
                        scratch=tmp_path, model=tiny_model)
    faults = report["faults_injected"]
    for kind in (*PER_TRAINING, *API_FAULTS, "operator_killed"):
        assert faults.get(kind, 0) >= 1, (kind, report)
    assert report["never_finished"] == 0, report
    assert report["billed_twice"] == 0 and report["billed_wrong"] == 0, report
    assert report["artifacts_missing_or_unreadable"] == 0, report
    assert report["failed_without_reason"] == 0, report
    # the one training whose disk fills up fails (billing 0); the others survive it all
    assert report["billed_once"] == 2 and report["outcomes_by_reason"]["Succeeded"] == 2, \
        report
    assert report["operator_restarts"] >= 1
