"""The operator's pod and both Jobs' pods pass the "restricted" Pod Security Standard,
with the chart's defaults and with every option on; the checker finds each rule's
breach (so a passing pod passes for a reason)."""

from __future__ import annotations

import copy

import pytest
from test_chart import EVERYTHING_ON, by_kind, render
from test_chart import helm as helm  # the fixture

from ltx_contract.spec import parse_spec
from ltx_operator.jobs import build_job
from ltx_operator.settings import OperatorSettings

from harness.pod_security import violations

BODY = {"metadata": {"name": "door", "namespace": "team", "uid": "u-1"}}
SPEC = parse_spec({"trainingDataUrl": "s3://d/c.zip", "model": {"url": "s3://m/ltx-2.3"}})


def pods_of(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    out = []
    for doc in docs:
        template = (doc.get("spec") or {}).get("template")
        if doc["kind"] in ("Deployment", "Job") and template:
            out.append((doc["metadata"]["name"], template["spec"],
                        (template.get("metadata") or {}).get("annotations") or {}))
    return out


@pytest.mark.parametrize("values", [(), ("-f", str(EVERYTHING_ON))], ids=["default", "all-on"])
def test_the_operator_pod_is_restricted(helm, values):
    (deployment,) = by_kind(render(helm, *values), "Deployment")
    for name, pod, notes in pods_of([deployment]):
        assert violations(pod, notes) == [], name


@pytest.mark.parametrize("settings", [
    OperatorSettings(model_claim_name="models"),
    OperatorSettings(model_url="s3://m/ltx-2.3", model_cache_claim_name="model-cache",
                     trainer_service_account="trainer", trainer_image_pull_secrets=["reg"],
                     trainer_env=[{"name": "HF_HUB_OFFLINE", "value": "1"}],
                     trainer_volumes=[{"name": "certs", "configMap": {"name": "ca"}}],
                     trainer_volume_mounts=[{"name": "certs", "mountPath": "/etc/ssl/x"}],
                     trainer_pod_annotations={"team": "video"}),
], ids=["default", "all-on"])
def test_both_jobs_pods_are_restricted(settings):
    gang = parse_spec({**SPEC.stored_form(), "gpus": 4, "nodes": 2})
    shard = settings.model_copy(update={"shard_base": True})
    for stage, spec, given in (("prepare", SPEC, settings), ("train", SPEC, settings),
                               ("train", gang, shard)):
        job = build_job(stage, BODY, spec, given)
        template = job["spec"]["template"]
        assert violations(template["spec"], template["metadata"].get("annotations")) == []
    assert build_job("train", BODY, gang, shard)["spec"]["completionMode"] == "Indexed"


BREACHES = {
    "HostProcess": lambda p, c: c.setdefault("securityContext", {}).update(
        windowsOptions={"hostProcess": True}),
    "Host namespaces": lambda p, c: p.update(hostNetwork=True),
    "Privileged containers": lambda p, c: c["securityContext"].update(privileged=True),
    "Capabilities: trainer adds": lambda p, c: c["securityContext"]["capabilities"].update(
        add=["SYS_ADMIN"]),
    "Host ports": lambda p, c: c["ports"][0].update(hostPort=8080),
    "HostPath volumes": lambda p, c: p["volumes"].append({"name": "h", "hostPath": {
        "path": "/"}}),
    "AppArmor": lambda p, c: c["securityContext"].update(
        appArmorProfile={"type": "Unconfined"}),
    "SELinux": lambda p, c: c["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
    "/proc mount": lambda p, c: c["securityContext"].update(procMount="Unmasked"),
    "Seccomp: the pod is Unconfined": lambda p, c: p["securityContext"].update(
        seccompProfile={"type": "Unconfined"}),
    "Sysctls": lambda p, c: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax",
                                                                  "value": "1"}]),
    "Volume types": lambda p, c: p["volumes"].append({"name": "n", "nfs": {"server": "x",
                                                                          "path": "/"}}),
    "Privilege escalation": lambda p, c: c["securityContext"].pop("allowPrivilegeEscalation"),
    "Running as non-root:": lambda p, c: (p["securityContext"].pop("runAsNonRoot"),
                                          c["securityContext"].pop("runAsNonRoot")),
    "Running as non-root user": lambda p, c: c["securityContext"].update(runAsUser=0),
    "Seccomp: trainer (or the pod)": lambda p, c: p["securityContext"].pop("seccompProfile"),
    "Capabilities: trainer must drop ALL": lambda p, c: c["securityContext"].pop(
        "capabilities"),
}


@pytest.mark.parametrize("rule", sorted(BREACHES))
def test_each_rule_is_checked(rule):
    pod = copy.deepcopy(build_job("train", BODY, SPEC, OperatorSettings())["spec"]["template"]
                        ["spec"])
    assert violations(pod) == []
    BREACHES[rule](pod, pod["containers"][0])
    found = violations(pod)
    assert any(v.startswith(rule) for v in found), found
