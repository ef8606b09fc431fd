"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and
kube-controller-manager, built from pinned sources by `make cluster` (`tests/cluster/`).

The API server authorizes with RBAC and signs service-account tokens with a key made
here; the tests' own user is an administrator by a static token. The controller
manager runs the controllers whose behaviour the operator relies on (Jobs, garbage
collection, namespaces, service accounts and their tokens, TTL after finished); no
scheduler and no kubelet run: `tests/harness/kubelet.py` plays the node. Every process listens
on 127.0.0.1 only and is stopped by its id.

`LTX_TEST_KUBECONFIG=PATH` points the tests at an existing cluster instead (its
current context, a bearer token or a client certificate with cluster-admin rights):
nothing is started, and the tests that kill or read the server's own processes are not
run there.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LTX_CLUSTER_BIN", ROOT / ".cluster" / "bin"))
ADMIN_TOKEN = "admin-" + os.urandom(8).hex()
#: what kube-controller-manager runs: the controllers the operator's Jobs depend on
CONTROLLERS = ("job-controller", "garbage-collector-controller", "namespace-controller",
               "serviceaccount-controller", "serviceaccount-token-controller",
               "ttl-after-finished-controller", "pod-garbage-collector-controller")
SERVICE_CIDR = "10.96.0.0/24"  # allocated from, never dialled: nothing here routes to it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: `make cluster` builds the control plane "
                           "(`make test` does it on first use)")
    return str(path)


@dataclass
class Process:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ControlPlane:
    root: Path
    etcd_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)
    #: an existing cluster's, when the tests were pointed at one
    existing: dict[str, Any] | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path, root: Path) -> ControlPlane:
        """An existing cluster, by its kubeconfig's current context."""
        import yaml

        config = yaml.safe_load(path.read_text())
        context = next(c["context"] for c in config["contexts"]
                       if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"]
                       if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, existing={"kubeconfig": path, "cluster": cluster, "user": user})

    @property
    def url(self) -> str:
        if self.existing:
            return self.existing["cluster"]["server"].rstrip("/")
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        """The certificate clients trust: the API server's self-signed serving one."""
        if self.existing:
            cluster = self.existing["cluster"]
            if "certificate-authority-data" in cluster:
                path = self.root / "ca.crt"
                path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
                return path
            return Path(cluster["certificate-authority"])
        return self.root / "certs" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.existing["kubeconfig"] if self.existing else self.root / "admin.kubeconfig"

    @property
    def admin_headers(self) -> dict[str, str]:
        """How the tests' administrator authenticates: a bearer token (a client
        certificate goes in the SSL context instead)."""
        token = self.existing["user"].get("token") if self.existing else ADMIN_TOKEN
        return {"Authorization": f"Bearer {token}"} if token else {}

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        user = self.existing["user"] if self.existing else {}
        if "client-certificate-data" in user:
            for key, name in (("client-certificate-data", "client.crt"),
                              ("client-key-data", "client.key")):
                (self.root / name).write_bytes(base64.b64decode(user[key]))
            context.load_cert_chain(self.root / "client.crt", self.root / "client.key")
        elif "client-certificate" in user:
            context.load_cert_chain(user["client-certificate"], user["client-key"])
        return context

    # --- start and stop ------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        self.start_seconds = 0.0
        if self.existing:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_keys()
        self.processes["etcd"] = Process("etcd", [
            binary("etcd"), "--data-dir", str(self.root / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync", "--log-level", "warn"], self.root / "etcd.log")
        self.processes["etcd"].start()
        self._wait("etcd", lambda: _get(f"http://127.0.0.1:{self.etcd_port}/health"))
        self.start_apiserver()
        self._write_kubeconfig()
        self.processes["kube-controller-manager"] = Process("kube-controller-manager", [
            binary("kube-controller-manager"), "--kubeconfig", str(self.kubeconfig),
            "--controllers", ",".join(CONTROLLERS), "--bind-address", "127.0.0.1",
            "--secure-port", "0", "--leader-elect=false",
            "--service-account-private-key-file", str(self.root / "sa.key"),
            "--root-ca-file", str(self.ca_file), "--concurrent-job-syncs", "10",
            # the garbage collector's view of the resources: the operator's CRD appears
            # during the session, so it re-reads the API's resources often
            "--kube-api-qps", "200", "--kube-api-burst", "400", "-v", "1"],
            self.root / "kube-controller-manager.log")
        self.processes["kube-controller-manager"].start()
        self._wait("kube-controller-manager",
                   lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default"))
        self.start_seconds = time.monotonic() - started

    def start_apiserver(self) -> None:
        self.processes["kube-apiserver"] = Process("kube-apiserver", [
            binary("kube-apiserver"), "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.api_port), "--cert-dir", str(self.root / "certs"),
            "--token-auth-file", str(self.root / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(self.root / "sa.pub"),
            "--service-account-signing-key-file", str(self.root / "sa.key"),
            "--api-audiences", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", SERVICE_CIDR, "--allow-privileged=true",
            "--enable-priority-and-fairness=false", "--profiling=false",
            "--max-requests-inflight", "1000", "--max-mutating-requests-inflight", "500",
            "--endpoint-reconciler-type", "none", "-v", "1",
            # what each account was answered about the product's resources
            "--audit-policy-file", str(self.root / "audit-policy.json"),
            "--audit-log-path", str(self.root / "audit.log"), "--audit-log-format", "json",
            "--audit-log-mode", "blocking"],
            self.root / "kube-apiserver.log")
        self.processes["kube-apiserver"].start()
        self._wait("kube-apiserver", self.ready, timeout=120)

    def restart_apiserver(self) -> float:
        """Kill the API server and start it again; the seconds it was away."""
        began = time.monotonic()
        self.processes["kube-apiserver"].kill()
        self.start_apiserver()
        return time.monotonic() - began

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.processes:
                self.processes[name].stop()

    def compact(self) -> int:
        """Compact etcd's history up to now: watches from older versions get 410 Gone."""
        url = f"http://127.0.0.1:{self.etcd_port}/v3"
        status = _post(f"{url}/maintenance/status", {})
        revision = int(status["header"]["revision"])
        _post(f"{url}/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def audit(self, **match: str) -> list[dict[str, Any]]:
        """The audit log's answers about the product's resources: those whose
        `objectRef` fields (resource, subresource, name, namespace) and, as `user`, whose
        username match."""
        user = match.pop("user", None)
        events = [json.loads(line) for line in
                  (self.root / "audit.log").read_text().splitlines() if line]
        return [e for e in events
                if (user is None or e["user"]["username"] == user)
                and all((e.get("objectRef") or {}).get(k) == v for k, v in match.items())]

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each process, in MB."""
        out = {}
        for name, process in self.processes.items():
            if process.popen is not None and process.popen.poll() is None:
                status = Path(f"/proc/{process.popen.pid}/status").read_text()
                kb = next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
                out[name] = round(kb / 1024, 1)
        return out

    # --- the administrator's requests ------------------------------------------------

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json", token: str | None = None,
                lines: bool = False) -> Any:
        """The answer's JSON (`lines`: a watch's, one JSON document a line)."""
        data = json.dumps(body).encode() if body is not None else None
        auth = {"Authorization": f"Bearer {token}"} if token else self.admin_headers
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            **auth, **({"Content-Type": content_type} if data is not None else {})})
        for attempt in range(10):
            try:
                with urllib.request.urlopen(request, context=self._ssl, timeout=30) as r:
                    text = r.read()
                break
            except urllib.error.HTTPError as exc:
                # 429 with Retry-After: a server just started (its priority-and-fairness
                # levels not set up yet) or busy; every Kubernetes client waits and asks again
                if exc.code != 429 or attempt == 9:
                    raise
                time.sleep(float(exc.headers.get("Retry-After") or 1))
        if lines:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text) if text else None

    def ready(self) -> bool:
        """The API server's /readyz answers ok."""
        request = urllib.request.Request(self.url + "/readyz", headers=self.admin_headers)
        with urllib.request.urlopen(request, context=self._ssl, timeout=5) as r:
            return r.status == 200

    @functools.cached_property
    def _ssl(self) -> ssl.SSLContext:
        return self.ssl_context()

    def get(self, path: str) -> Any:
        """The object at `path`, or None (absent, or the server not answering yet)."""
        try:
            return self.request("GET", path)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def service_account_token(self, namespace: str, name: str, seconds: int = 86400) -> str:
        """A token for a ServiceAccount, made by the API server (TokenRequest)."""
        answer = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}})
        return answer["status"]["token"]

    # --- set-up ----------------------------------------------------------------------

    def _write_keys(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.root / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        (self.root / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (self.root / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        (self.root / "audit-policy.json").write_text(json.dumps({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted"],
            "rules": [{"level": "Metadata", "resources": [{"group": "ltx-training.io"}]},
                      {"level": "None"}]}))

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(kubeconfig(self.url, self.ca_file, ADMIN_TOKEN, "admin"))

    def _wait(self, name: str, ready: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        process = self.processes.get(name)
        while not _safely(ready):
            if process is not None and process.popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.popen.returncode}:\n"
                                   f"{process.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {timeout:.0f} s:\n"
                                   f"{process.tail() if process else ''}")
            time.sleep(0.2)


def kubeconfig(server: str, ca_file: Path, token: str, user: str) -> str:
    """A kubeconfig for one user by bearer token (JSON is YAML)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                  "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}]})


def _safely(check: Any) -> Any:
    with contextlib.suppress(Exception):
        return check()
    return None


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())
