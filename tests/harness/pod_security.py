"""The Pod Security Standards' "restricted" profile (Kubernetes 1.30 and later), rule
by rule, as the Pod Security admission controller checks a pod spec: the baseline
rules and the restricted ones on top.

`violations(pod_spec, annotations)` names every rule a pod breaks; an empty list means
the namespace label `pod-security.kubernetes.io/enforce: restricted` admits it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                         "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def violations(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    return baseline(pod, annotations or {}) + restricted(pod)


def baseline(pod: dict[str, Any], annotations: dict[str, str]) -> list[str]:
    out = []
    pod_sc = pod.get("securityContext") or {}
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess") or any(
            ((c.get("securityContext") or {}).get("windowsOptions") or {}).get("hostProcess")
            for c in containers(pod)):
        out.append("HostProcess: windowsOptions.hostProcess must not be true")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"Host namespaces: {field} must not be true")
    for c in containers(pod):
        sc, name = c.get("securityContext") or {}, c.get("name")
        if sc.get("privileged"):
            out.append(f"Privileged containers: {name} is privileged")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            out.append(f"Capabilities: {name} adds {sorted(added - BASELINE_CAPABILITIES)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"Host ports: {name} uses a hostPort")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"/proc mount: {name} sets procMount {sc['procMount']}")
    for v in pod.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"HostPath volumes: {v['name']} is a hostPath")
    for sc, who in _contexts(pod):
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"AppArmor: {who} sets {apparmor}")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") \
                or selinux.get("role"):
            out.append(f"SELinux: {who} sets {selinux}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"Seccomp: {who} is Unconfined")
    for key, value in annotations.items():
        if key.startswith(APPARMOR_PREFIX) and value != "runtime/default" \
                and not value.startswith("localhost/"):
            out.append(f"AppArmor: annotation {key}={value}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: {sysctl.get('name')} is not a safe sysctl")
    return out


def restricted(pod: dict[str, Any]) -> list[str]:
    out = []
    pod_sc = pod.get("securityContext") or {}
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"Volume types: {v['name']} is {sorted(kinds)}")
    for c in containers(pod):
        sc, name = c.get("securityContext") or {}, c.get("name")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"Privilege escalation: {name} must set allowPrivilegeEscalation false")
        if sc.get("runAsNonRoot") is False or (
                not sc.get("runAsNonRoot") and not pod_sc.get("runAsNonRoot")):
            out.append(f"Running as non-root: {name} (or the pod) must set runAsNonRoot true")
        if sc.get("runAsUser") == 0:
            out.append(f"Running as non-root user: {name} sets runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"Seccomp: {name} (or the pod) must use RuntimeDefault or Localhost")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            out.append(f"Capabilities: {name} must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"Capabilities: {name} may add only NET_BIND_SERVICE")
    if pod_sc.get("runAsUser") == 0:
        out.append("Running as non-root user: the pod sets runAsUser 0")
    return out


def _contexts(pod: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    yield pod.get("securityContext") or {}, "the pod"
    for c in containers(pod):
        yield c.get("securityContext") or {}, c.get("name", "?")
