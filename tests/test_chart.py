"""The Helm chart: lint, render with default values and with every feature on, every
manifest valid against the Kubernetes schemas, the CRD and RBAC the same as the
operator's, typos refused by values.schema.json, settings the operator can read, and
the GitOps examples rendering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ltx_contract.spec import parse_spec
from ltx_operator.jobs import build_job
from ltx_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "ltx-extend"
EVERYTHING_ON = CHART / "ci" / "everything-on-values.yaml"
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")  # the oldest the CRD supports, and a recent one
NAMESPACE = "ltx-system"


@pytest.fixture(scope="module")
def helm() -> str:
    binary = Path(sys.executable).parent / "helm"
    assert binary.exists(), f"no {binary}: `make install` puts it there (tests/helm_binary.py)"
    return str(binary)


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    done = run_helm(helm, "template", "ltx", str(CHART), "--namespace", NAMESPACE, *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("values", [(), ("-f", str(EVERYTHING_ON))], ids=["default", "all-on"])
def test_lint_passes(helm, values):
    done = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [(), ("-f", str(EVERYTHING_ON))], ids=["default", "all-on"])
def test_every_manifest_is_valid_for_kubernetes(helm, values):
    docs = render(helm, *values)
    kinds = {d["kind"] for d in docs}
    expected = {"CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                "ClusterRoleBinding", "Service", "Deployment"}
    if values:
        expected |= {"Role", "RoleBinding", "PodDisruptionBudget", "ServiceMonitor",
                     "PodMonitor"}
    assert kinds == expected
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's kinds: checked against our objects below
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_crd_is_the_generated_one_and_kept_on_uninstall(helm):
    generated = yaml.safe_load((ROOT / "crds" / "ltxextendtrainings.yaml").read_text())
    (crd,) = by_kind(render(helm), "CustomResourceDefinition")
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "Delete=false" in crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    (unkept,) = by_kind(render(helm, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})
    assert not by_kind(render(helm, "--set", "crds.install=false"), "CustomResourceDefinition")


def _rules(rules: list[dict[str, Any]]) -> list[tuple]:
    return sorted((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"]))
                  for r in rules)


def test_the_rbac_is_the_operators(helm):
    operator_rules = yaml.safe_load(
        (ROOT / "operator" / "ltx_operator" / "rbac.yaml").read_text())["rules"]
    docs = render(helm)
    (role,) = by_kind(docs, "ClusterRole")
    assert _rules(role["rules"]) == _rules(operator_rules)
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (account,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": account["metadata"]["name"]}]
    deployment = by_kind(docs, "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == \
        account["metadata"]["name"]

    # watching two namespaces: Roles there, and only the cluster-scoped reads cluster-wide
    docs = render(helm, "-f", str(EVERYTHING_ON))
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert _rules(roles[0]["rules"] + cluster_role["rules"]) == _rules(operator_rules)
    assert all(set(r["resources"]) <= {"customresourcedefinitions", "namespaces"}
               and set(r["verbs"]) <= {"get", "list", "watch"} for r in cluster_role["rules"])


def test_a_misspelled_value_is_refused(helm):
    done = run_helm(helm, "template", "ltx", str(CHART), "--set",
                    "metrics.servicemonitor.enabled=true")
    assert done.returncode != 0
    assert "additional properties 'servicemonitor' not allowed" in done.stderr
    done = run_helm(helm, "template", "ltx", str(CHART), "--set", "gpu.count=9")
    assert done.returncode != 0 and "/gpu/count" in done.stderr


def test_the_operator_runs_once_locked_down(helm):
    docs = render(helm)
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]


def test_the_values_reach_the_operator_as_settings(helm):
    container = operator_container(render(helm, "-f", str(EVERYTHING_ON)))
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = OperatorSettings.from_env(env)
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.trainer_image == "ghcr.io/ltx-extend/trainer:0.1.0"
    assert settings.trainer_args == ["--checkpoint-every", "100"]
    assert (settings.store_url, settings.store_endpoint) == ("s3://ml-artifacts/ltx",
                                                             "http://minio.storage:9000")
    assert (settings.model_claim_name, settings.model_sub_path) == ("ltx-models", "ltx-2.3")
    assert settings.gpu_count == 2 and settings.max_workers == 50
    assert settings.prepare_node_selector == {"pool": "cpu"}
    assert settings.train_tolerations[0]["key"] == "nvidia.com/gpu"
    defaults = OperatorSettings.from_env(
        {e["name"]: e["value"] for e in operator_container(render(helm))["env"]})
    assert defaults.namespaces == [] and defaults.trainer_args == []


def test_the_monitors_find_the_metrics(helm):
    docs = render(helm, "-f", str(EVERYTHING_ON))
    (service,) = by_kind(docs, "Service")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in
                                                       service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    # the PodMonitor selects the trainer pods our Jobs make, on their named port
    settings = OperatorSettings.from_env({e["name"]: e["value"]
                                          for e in operator_container(docs)["env"]})
    job = build_job("train", {"metadata": {"name": "door", "namespace": "team-a", "uid": "u"}},
                    parse_spec({"trainingDataUrl": "s3://d/c.zip"}), settings)
    (pod_monitor,) = by_kind(docs, "PodMonitor")
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in job["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_notes_show_the_first_apply(helm):
    done = run_helm(helm, "install", "ltx", str(CHART), "--dry-run=client",
                    "--namespace", NAMESPACE)
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "kind: LtxExtendTraining" in notes and "kubectl get ltxt" in notes
    assert "create secret generic ltx-extend-store" in notes


@pytest.mark.parametrize(("path", "values"), [
    ("gitops/argocd/application.yaml", lambda d: d["spec"]["source"]["helm"]["valuesObject"]),
    ("gitops/flux/helmrelease.yaml", lambda d: d["spec"]["values"]),
])
def test_the_gitops_examples_render(helm, tmp_path, path, values):
    docs = [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]
    app = next(d for d in docs if d["kind"] in ("Application", "HelmRelease"))
    chart = (app["spec"]["source"]["path"] if app["kind"] == "Application"
             else app["spec"]["chart"]["spec"]["chart"])
    assert (ROOT / chart).resolve() == CHART
    given = tmp_path / "values.yaml"
    given.write_text(yaml.safe_dump(values(app)))
    assert by_kind(render(helm, "-f", str(given)), "Deployment")


def test_the_packaged_chart_carries_the_linked_crd_and_rbac(helm, tmp_path):
    done = run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (package,) = tmp_path.glob("ltx-extend-*.tgz")
    docs = [d for d in yaml.safe_load_all(run_helm(
        helm, "template", "ltx", str(package), "--namespace", NAMESPACE).stdout) if d]
    assert by_kind(docs, "CustomResourceDefinition") == by_kind(render(helm),
                                                                "CustomResourceDefinition")
    assert by_kind(docs, "ClusterRole")[0]["rules"]
