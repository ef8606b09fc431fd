"""The Helm chart: lint, render with default values and with every feature on, every
manifest valid against the Kubernetes schemas, the CRD and RBAC the same as the
operator's, typos refused by values.schema.json, settings the operator can read, and
the GitOps examples rendering."""

from __future__ import annotations

import json
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

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ltx-extend"
EVERYTHING_ON = CHART / "ci" / "everything-on-values.yaml"
TINY_MODEL = CHART / "ci" / "tiny-model-values.yaml"
#: A platform's base model: the chart refuses to install without one.
MODEL = ("--set", "model.claimName=ltx-models")
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")  # the oldest the CRD supports, and a recent one
NAMESPACE = "ltx-system"


@pytest.fixture(scope="module")
def helm() -> str:
    binary = Path(sys.executable).parent / "helm"
    assert binary.exists(), (f"no {binary}: `make install` puts it there "
                             "(tests/harness/helm_binary.py)")
    return str(binary)


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    done = run_helm(helm, "template", "ltx", str(CHART), "--namespace", NAMESPACE, *MODEL,
                    *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("values", [(), ("-f", str(EVERYTHING_ON))], ids=["default", "all-on"])
def test_lint_passes(helm, values):
    done = run_helm(helm, "lint", "--strict", str(CHART), *MODEL, *values)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [(), ("-f", str(EVERYTHING_ON))], ids=["default", "all-on"])
def test_every_manifest_is_valid_for_kubernetes(helm, values):
    docs = render(helm, *values)
    kinds = {d["kind"] for d in docs}
    expected = {"CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                "ClusterRoleBinding", "Service", "Deployment"}
    if values:  # named namespaces: Roles there, nothing cluster-wide but the tenants' roles
        expected = expected - {"ClusterRoleBinding"} | {
            "Role", "RoleBinding", "PodDisruptionBudget", "ServiceMonitor", "PodMonitor",
            "NetworkPolicy", "PrometheusRule", "ConfigMap"}
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
    role = next(r for r in by_kind(docs, "ClusterRole")
                if r["metadata"]["name"] == "ltx-ltx-extend")
    assert _rules(role["rules"]) == _rules(operator_rules)
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (account,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": account["metadata"]["name"]}]
    deployment = by_kind(docs, "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == \
        account["metadata"]["name"]

    # watching two namespaces: Roles there, and nothing of the operator's cluster-wide
    docs = render(helm, "-f", str(EVERYTHING_ON))
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(_rules(r["rules"]) == _rules(operator_rules) for r in roles)
    assert {r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")} == {"ltx-edit",
                                                                            "ltx-view"}
    assert not by_kind(docs, "ClusterRoleBinding")


def test_tenants_get_trainings_through_the_default_roles(helm):
    roles = {r["metadata"]["name"]: r for r in by_kind(render(helm), "ClusterRole")}
    edit, view = roles["ltx-ltx-extend-edit"], roles["ltx-ltx-extend-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert {"create", "delete", "patch", "update"} <= set(edit["rules"][0]["verbs"])
    assert set(view["rules"][0]["verbs"]) == {"get", "list", "watch"}
    off = render(helm, "--set", "rbac.aggregateToDefaultRoles=false")
    assert [r["metadata"]["name"] for r in by_kind(off, "ClusterRole")] == ["ltx-ltx-extend"]


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
    assert settings.trainer_image == "ghcr.io/ltx-extend/trainer@sha256:" + "0" * 63 + "2"
    assert settings.trainer_args == ["--checkpoint-every", "100"]
    assert (settings.store_url, settings.store_endpoint) == ("s3://ml-artifacts/ltx",
                                                             "http://minio.storage:9000")
    assert (settings.model_claim_name, settings.model_sub_path) == ("ltx-models", "ltx-2.3")
    assert settings.gpu_count == 2 and settings.max_workers == 50
    assert settings.prepare_node_selector == {"pool": "cpu"}
    assert settings.train_tolerations[0]["key"] == "nvidia.com/gpu"
    assert settings.trainer_service_account == "ltx-trainer"
    assert settings.trainer_image_pull_secrets == ["registry"]
    assert settings.trainer_env == [{"name": "HF_HUB_OFFLINE", "value": "1"}]
    assert settings.trainer_env_from == [{"configMapRef": {"name": "proxy-settings"}}]
    assert settings.trainer_volumes[0]["configMap"] == {"name": "corporate-ca"}
    assert settings.trainer_volume_mounts[0]["mountPath"] == "/etc/ssl/corporate"
    assert settings.trainer_pod_labels == {"team": "video"}
    assert settings.train_shm_size == "32Gi" and settings.train_ephemeral_storage == "100Gi"
    assert settings.model_cache_claim_name == "ltx-model-cache"
    assert (settings.rendezvous_port, settings.rank_restarts, settings.shard_base) == (
        29500, 5, True)
    defaults = OperatorSettings.from_env(
        {e["name"]: e["value"] for e in operator_container(render(helm))["env"]})
    assert defaults.namespaces == [] and defaults.trainer_args == []
    assert (defaults.rendezvous_port, defaults.rank_restarts, defaults.shard_base) == (
        29400, 3, False)
    assert defaults.trainer_service_account is None and defaults.trainer_env == []
    assert defaults.prepare_ephemeral_storage == "20Gi" and defaults.train_shm_size == "16Gi"
    # what the values shape reaches both Jobs
    job = build_job("train", {"metadata": {"name": "door", "namespace": "team-a", "uid": "u"}},
                    parse_spec({"trainingDataUrl": "s3://d/c.zip",
                                "model": {"url": "s3://m/ltx"}}), settings)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ltx-trainer"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "video"
    container = pod["containers"][0]
    assert container["resources"]["requests"]["ephemeral-storage"] == "100Gi"
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["shm"]["emptyDir"] == {
        "medium": "Memory", "sizeLimit": "32Gi"}
    assert container["args"][-4:] == ["--model", "s3://m/ltx", "--model-cache", "/model-cache"]
    assert {v["name"]: v for v in pod["volumes"]}["model-cache"]["persistentVolumeClaim"] == {
        "claimName": "ltx-model-cache"}


def test_names_and_images_follow_the_overrides(helm):
    docs = render(helm, "-f", str(EVERYTHING_ON))
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["metadata"]["name"] == "ltx"
    assert operator_container(docs)["image"] == (
        "ghcr.io/ltx-extend/operator@sha256:" + "0" * 63 + "1")
    named = render(helm, "--set", "nameOverride=lora")
    assert by_kind(named, "Deployment")[0]["metadata"]["name"] == "ltx-lora"
    assert operator_container(render(helm))["image"] == "ghcr.io/ltx-extend/operator:0.1.0"


def test_network_policies_let_the_operator_reach_the_progress_port_only(helm):
    docs = render(helm, "-f", str(EVERYTHING_ON))
    policies = {(p["metadata"]["namespace"], p["metadata"]["name"]): p["spec"]
                for p in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {(NAMESPACE, "ltx"), ("team-a", "ltx-trainer"),
                             ("team-b", "ltx-trainer")}
    (deployment,) = by_kind(docs, "Deployment")
    operator_labels = deployment["spec"]["template"]["metadata"]["labels"]
    trainer = policies["team-a", "ltx-trainer"]
    job = build_job("train", {"metadata": {"name": "door", "namespace": "team-a", "uid": "u"}},
                    parse_spec({"trainingDataUrl": "s3://d/c.zip"}),
                    OperatorSettings(model_claim_name="m"))
    assert trainer["podSelector"]["matchLabels"].items() <= \
        job["spec"]["template"]["metadata"]["labels"].items()
    (allowed, prometheus) = trainer["ingress"][0]["from"]
    assert allowed["podSelector"]["matchLabels"].items() <= operator_labels.items()
    assert allowed["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE}
    assert prometheus["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert trainer["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert {p["port"] for p in trainer["egress"][1]["ports"]} == {443, 80, 9000}
    # a gang's train pods reach each other on any port (rendezvous, NCCL, gloo)
    gang = build_job("train", {"metadata": {"name": "door", "namespace": "team-a", "uid": "u"}},
                     parse_spec({"trainingDataUrl": "s3://d/c.zip", "nodes": 2}),
                     OperatorSettings(model_claim_name="m"))
    labels = gang["spec"]["template"]["metadata"]["labels"]
    (peers,) = trainer["ingress"][1]["from"]
    assert "ports" not in trainer["ingress"][1]
    assert peers["podSelector"]["matchLabels"].items() <= labels.items()
    assert "namespaceSelector" not in peers  # the training's own namespace only
    assert trainer["egress"][2]["to"] == trainer["ingress"][1]["from"]
    out = policies[NAMESPACE, "ltx"]["egress"]
    assert out[1]["ports"] == [{"port": 8080, "protocol": "TCP"}]


def test_the_alerts_read_metrics_that_exist(helm):
    from ltx_operator import metrics

    (rule,) = by_kind(render(helm, "-f", str(EVERYTHING_ON)), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    alerts = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"LtxTrainingsFailing", "LtxTrainingStalled"}
    assert f"{metrics.OUTCOMES._name}_total" in alerts["LtxTrainingsFailing"]
    from prometheus_client import generate_latest

    from ltx_trainer.progress import ProgressState

    served = generate_latest(ProgressState().registry).decode()
    for name in ("ltx_extend_train_step", "ltx_extend_train_total_steps"):
        assert name in alerts["LtxTrainingStalled"] and f"\n{name}" in served


def exported(registry: Any) -> set[str]:
    """The series names a prometheus-client registry serves, labelled or not yet set."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",), "summary": ("_sum", "_count", "")}
    return {family.name + suffix for family in registry.collect()
            for suffix in suffixes[family.type]}


def test_the_dashboard_reads_metrics_that_exist(helm):
    import re

    from prometheus_client import REGISTRY

    from ltx_operator import metrics  # noqa: F401  (registers the operator's metrics)
    from ltx_trainer.progress import ProgressState

    assert not by_kind(render(helm), "ConfigMap")  # opt-in
    (config_map,) = by_kind(render(helm, "-f", str(EVERYTHING_ON), "--set",
                                   "grafanaDashboard.namespace=monitoring"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's label
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Training"}
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    queries = [t["expr"] for p in panels for t in p["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    # the series names (label names such as ltx_training_io_training are not metrics)
    names = {n for q in queries for n in re.findall(r"\bltx_(?:operator|extend)_\w+", q)}
    operator = {n for n in exported(REGISTRY) if n.startswith("ltx_")}
    trainer = exported(ProgressState().registry)
    assert all(n.startswith(("ltx_operator_", "ltx_extend_")) for n in operator | trainer)
    assert names <= operator | trainer, names - operator - trainer
    # what a platform team looks at: every operator metric, each training's step, loss
    # and speed, split by the label the PodMonitor puts on the trainers' series
    assert {n for n in operator - names if not n.endswith(("_sum", "_count"))} == set()
    assert {"ltx_extend_train_step", "ltx_extend_train_loss",
            "ltx_extend_train_validation_loss", "ltx_extend_train_steps_per_second"} <= names
    pod_monitor = by_kind(render(helm, "-f", str(EVERYTHING_ON)), "PodMonitor")[0]
    label = re.sub(r"\W", "_", pod_monitor["spec"]["podTargetLabels"][0])  # as Prometheus
    assert all(label in q for q in queries if "ltx_extend_" in q and "label_values" not in q)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


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
    assert set(pod_monitor["spec"]["podTargetLabels"]) <= pod_labels.keys()
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def notes(helm: str, *args: str) -> str:
    done = run_helm(helm, "install", "ltx", str(CHART), "--dry-run=client",
                    "--namespace", NAMESPACE, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("NOTES:", 1)[1]


def test_notes_show_the_model_and_the_first_apply(helm):
    text = notes(helm, *MODEL, "--set", "model.subPath=ltx-2.3")
    assert "kind: LtxExtendTraining" in text and "kubectl get ltxt" in text
    assert "create secret generic ltx-extend-store" in text
    assert "Base model for trainings that name none: the claim ltx-models, folder ltx-2.3" \
        in text
    irsa = notes(helm, *MODEL, "--set", "store.secretName=", "--set",
                 "trainer.serviceAccountName=ltx-trainer")
    assert "create secret" not in irsa and "(ltx-trainer: IRSA or Workload Identity)" in irsa


def test_no_model_source_is_refused_unless_the_tiny_model_is_allowed(helm):
    done = run_helm(helm, "template", "ltx", str(CHART))
    assert done.returncode != 0
    assert "no base model: set model.claimName" in done.stderr
    text = notes(helm, "-f", str(TINY_MODEL))
    assert "none: each training must set spec.model" in text
    assert "ends Failed (reason NoBaseModel)" in text


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
        helm, "template", "ltx", str(package), "--namespace", NAMESPACE, *MODEL).stdout) if d]
    assert by_kind(docs, "CustomResourceDefinition") == by_kind(render(helm),
                                                                "CustomResourceDefinition")
    assert by_kind(docs, "ClusterRole")[0]["rules"]
