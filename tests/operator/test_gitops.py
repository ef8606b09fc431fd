"""The Argo CD health check, evaluated by a real Lua interpreter (lupa)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lupa import LuaRuntime

SCRIPT = (Path(__file__).resolve().parents[2] / "gitops" / "argocd" /
          "health-ltxextendtraining.lua").read_text()


def health(status: dict | None) -> dict:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def table(value):  # nested dicts/lists → Lua tables (lists 1-based)
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    obj = {"apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining"}
    if status is not None:
        obj["status"] = status
    lua.globals().obj = table(obj)
    result = lua.execute(SCRIPT)
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize(("status", "expected", "message"), [
    (None, "Progressing", "Waiting for the operator"),
    ({"phase": "Preparing"}, "Progressing", "Preparing"),
    ({"phase": "Training", "progress": {"summary": "500/2000"}}, "Progressing",
     "Training 500/2000"),
    ({"phase": "Succeeded"}, "Healthy", "The LoRA is ready"),
    ({"phase": "Failed", "conditions": [
        {"type": "Validated", "status": "True"},
        {"type": "Failed", "status": "True", "reason": "InvalidInput",
         "message": "All training videos are too short to be trainable"}]},
     "Degraded", "InvalidInput: All training videos are too short to be trainable"),
    ({"phase": "Suspended"}, "Suspended", "Suspended"),
    ({"phase": "Pending", "conditions": [
        {"type": "Running", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]},
     "Progressing", "Pending (Unschedulable: 0/3 nodes are available: 3 Insufficient "
     "nvidia.com/gpu.)"),
])
def test_health(status, expected, message):
    assert health(status) == {"status": expected, "message": message}
