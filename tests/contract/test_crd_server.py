"""The CRD and the chart on the real API server (`control_plane.py`): accepted as a
platform team applies them, and every rule enforced by the server itself — valid
resources stored, invalid ones refused with the message that names the field and the
rule, immutable fields refused on update — the same verdicts as the spec model and as
`crd_admission.py`, which the fast tests use."""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest
import test_crd
import yaml
from hypothesis import HealthCheck, given, settings
from test_crd import SPECS, resource

from ltx_contract.crd import build_crd
from ltx_contract.resource import parse_resource
from ltx_contract.spec import SpecError, parse_spec

from harness.control_plane import ControlPlane
from harness.crd_admission import Admission
from harness.operator_cluster import NAMESPACE, RBAC, kubectl, render_chart

ROOT = Path(__file__).resolve().parents[2]
TRAININGS = f"/apis/ltx-training.io/v1alpha1/namespaces/{NAMESPACE}/ltxextendtrainings"
URL = "https://example.com/clips.zip"
#: how the server words a rule's refusal before the rule's own message
_PREFIX = re.compile(r"^Invalid value: ")


@pytest.fixture(scope="module")
def plane(real_api) -> ControlPlane:
    return real_api.plane


@pytest.fixture(scope="module")
def admission() -> Admission:
    return Admission(build_crd())


def server_admit(plane: ControlPlane, obj: dict[str, Any],
                 old: dict[str, Any] | None = None) -> list[str]:
    """The server's answer to creating `obj` (or replacing the stored `old` with it), as a
    dry run: [] when it would be stored, else each cause as `.field: message`."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = NAMESPACE
    try:
        if old is None:
            plane.request("POST", f"{TRAININGS}?dryRun=All&fieldValidation=Strict", obj)
        else:
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            plane.request("PUT", f"{TRAININGS}/{old['metadata']['name']}?dryRun=All"
                          "&fieldValidation=Strict", obj)
    except urllib.error.HTTPError as error:
        status = json.loads(error.read())
        if error.code == 400:  # not decoded: an unknown field (kubectl's strict validation)
            return [status["message"]]
        assert error.code == 422, status
        return [f".{c.get('field', '')}: {_PREFIX.sub('', c['message'])}"
                for c in status["details"]["causes"]]
    return []


def model_problems(spec: dict[str, Any]) -> list[str]:
    try:
        parse_spec(copy.deepcopy(spec))
    except SpecError as exc:
        return exc.problems
    return []


def test_the_crd_is_accepted_established_and_structural(plane):
    crd = plane.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
        "ltxextendtrainings.ltx-training.io")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert "NonStructuralSchema" not in conditions, crd["status"]["conditions"]
    assert crd["status"]["acceptedNames"]["shortNames"] == ["ltxt"]


def test_the_charts_manifests_are_accepted_and_grant_the_operators_role(plane):
    rendered = [d for d in yaml.safe_load_all(render_chart()) if d]
    kinds = {d["kind"] for d in rendered}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= kinds
    for doc in rendered:  # each is stored as rendered (the fixture applied them)
        namespace = doc["metadata"].get("namespace")
        args = ["get", doc["kind"].lower(), doc["metadata"]["name"], "-o", "json"]
        stored = json.loads(kubectl(plane, *args, *(["-n", namespace] if namespace else []))
                            .stdout)
        assert stored["metadata"]["name"] == doc["metadata"]["name"]
    role = next(d for d in rendered if d["kind"] == "ClusterRole"
                and not d["metadata"]["name"].endswith(("-edit", "-view")))
    assert role["rules"] == yaml.safe_load(RBAC.read_text())["rules"]
    # the server reads the chart's role as the operator needs it
    review = kubectl(plane, "auth", "can-i", "patch", "ltxextendtrainings.ltx-training.io",
                     "--subresource=status", "-n", NAMESPACE,
                     f"--as=system:serviceaccount:ltx-system:{account(rendered)}",
                     check=False)
    assert review.stdout.strip() == "yes", review
    refused = kubectl(plane, "auth", "can-i", "create", "pods", "-n", NAMESPACE,
                      f"--as=system:serviceaccount:ltx-system:{account(rendered)}",
                      check=False)
    assert refused.stdout.strip() == "no", refused


def account(rendered: list[dict[str, Any]]) -> str:
    return next(d for d in rendered if d["kind"] == "ServiceAccount")["metadata"]["name"]


def test_kubectl_apply_of_every_example_is_stored(plane):
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        answer = kubectl(plane, "apply", "--server-side", "--dry-run=server", "-n", NAMESPACE,
                         "-f", str(example), check=False)
        assert answer.returncode == 0, (example.name, answer.stderr)
        for doc in yaml.safe_load_all(example.read_text()):
            parse_resource(doc)



def test_kubectl_apply_refuses_an_invalid_training_naming_the_field_and_the_rule(plane,
                                                                                 tmp_path):
    bad = resource({"trainingDataUrl": URL, "conditioningFrames": 12}, "refused")
    bad["metadata"]["namespace"] = NAMESPACE
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    answer = kubectl(plane, "apply", "--server-side", "-n", NAMESPACE, "-f",
                     str(tmp_path / "bad.yaml"), check=False)
    assert answer.returncode != 0
    assert "spec.conditioningFrames" in answer.stderr, answer.stderr
    assert "conditioningFrames (12) must be a multiple of 8" in answer.stderr, answer.stderr
    assert plane.get(f"{TRAININGS}/refused") is None  # nothing stored

@pytest.mark.parametrize(("spec", "expected"), test_crd.REFUSALS)
def test_the_server_refuses_with_the_models_message(plane, admission, spec, expected):
    obj = resource({"trainingDataUrl": URL, **spec})
    assert server_admit(plane, obj) == [expected] == admission.admit(obj)


@pytest.mark.parametrize("cf", [8, 12, 16, 88, 96, 120])
@pytest.mark.parametrize("frames", [9, 17, 88, 89, 90, 96, 97, 121])
def test_each_rules_boundaries_give_the_servers_and_the_models_verdict(plane, admission, cf,
                                                                       frames):
    for url in (URL, "ftp://a/b.zip", "s3://bucket/key.zip", "https://a b"):
        spec = {"conditioningFrames": cf, "numberOfFrames": frames,
                "validationNumberOfFrames": 121 - frames + 9, "trainingDataUrl": url}
        served = server_admit(plane, resource(spec))
        assert bool(served) == bool(model_problems(spec)), (spec, served)
        assert sorted(served) == sorted(admission.admit(resource(spec))), spec


@pytest.mark.parametrize("name", ["door", "n" * 54, "n" * 55, "n" * 56, "2door", "door-"])
@pytest.mark.parametrize("nodes", [1, 2])
def test_the_name_rules_on_the_server(plane, admission, name, nodes):
    obj = resource({"trainingDataUrl": URL, "nodes": nodes}, name)
    assert sorted(server_admit(plane, obj)) == sorted(admission.admit(obj))


class TestImmutabilityOnTheServer:
    @pytest.fixture(scope="class")
    def stored(self, plane) -> dict[str, Any]:
        obj = copy.deepcopy(test_crd.TestImmutability.base)
        obj["metadata"] |= {"name": f"immutable-{uuid.uuid4().hex[:6]}", "namespace": NAMESPACE}
        created = plane.request("POST", TRAININGS, obj)
        yield created
        plane.request("DELETE", f"{TRAININGS}/{created['metadata']['name']}")

    def update(self, plane, stored, **changes) -> list[str]:
        new = copy.deepcopy(stored)
        for key, value in changes.items():
            if value is None:
                new["spec"].pop(key, None)
            else:
                new["spec"][key] = value
        return server_admit(plane, new, old=stored)

    def test_suspend_and_ttl_may_change(self, plane, stored):
        assert self.update(plane, stored, suspend=True) == []
        assert self.update(plane, stored, ttlSecondsAfterFinished=3600) == []
        assert self.update(plane, stored, ttlSecondsAfterFinished=None) == []

    @pytest.mark.parametrize(("field", "value"), [
        ("rank", 64), ("numberOfSteps", 100), ("trainingDataUrl", "s3://a/b.zip"),
        ("validation", [{"videoUrl": "s3://a/c.mp4"}]), ("withAudio", True),
    ])
    def test_training_fields_may_not(self, plane, stored, field, value):
        errors = self.update(plane, stored, **{field: value})
        assert errors and all("cannot be" in e for e in errors), errors
        assert any(field in e for e in errors)

    def test_optional_fields_may_not_be_added(self, plane, stored):
        [error] = self.update(plane, stored, priorityClassName="high")
        assert error.startswith(".spec: priorityClassName cannot be added or removed"), error


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=SPECS)
def test_the_server_the_emulated_admission_and_the_model_agree_on_random_specs(
        plane, admission, spec):
    served = server_admit(plane, resource(spec))
    assert bool(served) == bool(model_problems(spec)), (spec, served)
    assert bool(served) == bool(admission.admit(resource(spec))), (spec, served)
