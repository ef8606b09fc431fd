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


def test_kopf_keeps_a_bounded_number_of_connections(tmp_path, monkeypatch):
    """Kopf logs in as the Kubernetes client does, on a session whose connections are
    bounded: one per watch of each namespace, and one per worker thread."""
    import asyncio

    import kopf

    from ltx_operator import login

    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://api.example:6443",
                                                "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "secret"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u",
                                               "namespace": "team"}}]}))
    from kubernetes.config import kube_config
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert login.connections(20, []) == 24 and login.connections(20, ["a", "b", "c"]) == 32
    assert login.connections(20, ["team-*"]) == 0  # a pattern's namespaces: not counted

    async def log_in() -> tuple[kopf.AiohttpSession, int, str]:
        handler = login.login(24)
        info = await handler(logger=logging.getLogger(), settings=kopf.OperatorSettings())
        try:
            return info, info.aiohttp_session.connector.limit, \
                info.aiohttp_session.headers["Authorization"]
        finally:
            await info.aiohttp_session.close()

    info, limit, authorization = asyncio.run(log_in())
    assert info.server == "https://api.example:6443"
    assert limit == 24 and authorization == "Bearer secret"
