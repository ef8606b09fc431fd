"""The tests' control plane itself: the pinned version, loopback only, stopped by id."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest

from harness.control_plane import ControlPlane

GO_MOD = Path(__file__).parents[1] / "cluster" / "go.mod"


def listening(pid: int) -> list[str]:
    return [c.laddr.ip for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN]


def test_the_server_is_the_pinned_release(real_api):
    pinned = re.search(r"k8s.io/kubernetes (v\S+)", GO_MOD.read_text()).group(1)
    assert real_api.plane.get("/version")["gitVersion"] == pinned


def test_a_control_plane_listens_on_loopback_only_and_leaves_nothing_when_stopped(tmp_path):
    plane = ControlPlane(tmp_path / "plane")
    try:
        plane.start()
        pids = {name: p.popen.pid for name, p in plane.processes.items()}
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        addresses = {name: listening(pid) for name, pid in pids.items()}
        assert addresses["etcd"] and addresses["kube-apiserver"], addresses
        assert all(ip == "127.0.0.1" for ips in addresses.values() for ip in ips), addresses
        # the controllers run: the namespace's default ServiceAccount was made by one
        assert plane.get("/api/v1/namespaces/default/serviceaccounts/default")
    finally:
        plane.stop()
    for pid in pids.values():
        with pytest.raises(psutil.NoSuchProcess):
            psutil.Process(pid).status()
    assert plane.get("/version") is None
