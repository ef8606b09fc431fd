"""The generated CRD: freshness, structure, and agreement with the spec model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltx_contract import rules
from ltx_contract.crd import MUTABLE_SPEC_FIELDS, build_crd, render_crd
from ltx_contract.resource import NAME_RULES, name_problems, parse_resource
from ltx_contract.spec import SpecError, SpecModel, TrainingSpec, parse_spec

from harness.crd_admission import Admission

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "ltxextendtrainings.yaml"
URL = "https://example.com/clips.zip"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def admission(crd) -> Admission:
    return Admission(crd)


def resource(spec: dict[str, Any], name: str = "demo") -> dict[str, Any]:
    return {"apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def test_committed_crd_is_the_generated_one():
    assert CRD_FILE.read_text(encoding="utf-8") == render_crd()


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, prop in node.get("properties", {}).items():
            yield from _walk(prop, f"{path}.{key}")
        if "items" in node:
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural_and_every_field_is_described(crd):
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        for path, node in _walk(root["properties"][section], section):
            assert "type" in node, f"{path} has no type"
            forbidden = {"anyOf", "oneOf", "allOf", "$ref", "title", "const"} & set(node)
            assert not forbidden, f"{path} uses {forbidden}"
            if path.count(".") and not path.endswith(("[]", "{}")):
                assert node.get("description"), f"{path} has no description"


def test_crd_identity_and_columns(crd):
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "ltxextendtrainings.ltx-training.io"
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "LtxExtendTraining", "ltxextendtrainings", ["ltxt"])
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Progress"] == ".status.progress.summary"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_crd_defaults_are_the_model_defaults(crd):
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]
    model = TrainingSpec.model_construct()
    for name, info in TrainingSpec.model_fields.items():
        if info.default is not None and "default" in props[info.alias]:
            assert props[info.alias]["default"] == getattr(model, name), info.alias
    assert props["rank"]["enum"] == [8, 16, 32, 64, 128]
    assert (props["numberOfSteps"]["minimum"], props["numberOfSteps"]["maximum"]) == (100, 20000)
    assert props["learningRate"]["exclusiveMinimum"] is True
    assert (props["learningRate"]["minimum"], props["learningRate"]["maximum"]) == (0, 0.01)
    assert "at most 0.01" in props["learningRate"]["description"]


ALL_RULES = [
    rules.CONDITIONING_FRAMES_MULTIPLE_OF_8, rules.SUFFIX_SHORTER_THAN_TRAINING_CLIP,
    rules.SUFFIX_SHORTER_THAN_VALIDATION_CLIP, rules.TRAINING_DATA_URL,
]


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.cel[:40])
@pytest.mark.parametrize("cf", [8, 12, 16, 88, 96, 120])
@pytest.mark.parametrize("frames", [9, 17, 88, 89, 90, 96, 97, 121])
@pytest.mark.parametrize("url", [URL, "ftp://a/b.zip", "s3://bucket/key.zip", "https://a b"])
def test_python_and_cel_forms_of_each_rule_agree(admission, rule, cf, frames, url):
    obj = {"conditioningFrames": cf, "numberOfFrames": frames,
           "validationNumberOfFrames": 121 - frames + 9, "trainingDataUrl": url}
    assert bool(admission.evaluate(rule.cel, obj)) == rule.check(obj)
    assert str(admission.evaluate(rule.message_cel, obj)) == rule.message(obj)


def test_every_rule_of_every_part_is_in_the_crd(crd):
    in_crd = {v["rule"] for _, node in _walk(crd["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]) for v in node.get("x-kubernetes-validations", ())}
    declared = {rule.cel for rule in NAME_RULES}
    stack = [SpecModel]
    while stack:
        model = stack.pop()
        declared |= {rule.cel for rule in model.__rules__}
        stack += model.__subclasses__()
    assert declared <= in_crd
    assert len(declared) >= 8


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_examples_are_admitted_by_the_crd_and_the_model(admission, example):
    for doc in yaml.safe_load_all(example.read_text()):
        assert admission.admit(doc) == []
        parse_resource(doc)


#: specs each refused by one rule, with the message the API server gives
REFUSALS = [
    ({"conditioningFrames": 12},
     ".spec.conditioningFrames: conditioningFrames (12) must be a multiple of 8 "
     "(8, 16, 24, …)"),
    ({"conditioningFrames": 96, "numberOfFrames": 96, "validationNumberOfFrames": 121},
     ".spec.conditioningFrames: conditioningFrames (96) must be smaller than numberOfFrames "
     "(89, snapped down from 96): the suffix may not cover the whole clip, there must be a "
     "lead-in left to generate"),
    ({"trainingDataUrl": "ftp://x/y.zip"},
     ".spec.trainingDataUrl: trainingDataUrl must be an http://, https://, s3:// or file:// "
     "URL"),
    ({"model": {"claimName": "a", "url": "s3://b/c"}},
     ".spec.model.claimName: exactly one of claimName (a PVC) or url (a store prefix) must "
     "be set"),
]


@pytest.mark.parametrize(("spec", "expected"), REFUSALS)
def test_api_server_gives_the_models_message(admission, spec, expected):
    full = {"trainingDataUrl": URL, **spec}
    assert admission.admit(resource(full)) == [expected]
    with pytest.raises(SpecError) as info:
        parse_spec(full)
    message = expected.split(": ", 1)[1]
    assert any(p == message or p.endswith(f": {message}") for p in info.value.problems)


def test_name_length_rule(admission):
    assert admission.admit(resource({"trainingDataUrl": URL}, "n" * 55)) == []
    [error] = admission.admit(resource({"trainingDataUrl": URL}, "n" * 56))
    assert "must be at most 55 characters" in error


@pytest.mark.parametrize("nodes", [None, 1, 2, 16])
@pytest.mark.parametrize("name", ["door", "n" * 54, "n" * 55, "2door", "door.v2", "door-"])
def test_a_name_on_many_nodes_is_a_service_name_the_api_server_and_the_model_agree(
        admission, name, nodes):
    obj = resource({"trainingDataUrl": URL} | ({} if nodes is None else {"nodes": nodes}),
                   name)
    errors = admission.admit(obj)
    subdomain = name[-1] != "-"  # what the API server asks of every name
    valid = subdomain and ((nodes or 1) == 1 or (
        len(name) <= 54 and name[0].isalpha() and name.replace("-", "").isalnum()))
    assert (errors == []) is valid, errors
    ours = [e for e in errors if "RFC 1123 subdomain" not in e]  # the product's own rules
    assert [e.split(": ", 1)[1] for e in ours] == name_problems(obj)
    if not valid and (nodes or 1) > 1:
        assert ours[0].startswith(f".metadata.name: metadata.name ({name!r}) must be at "
                                  "most 54 characters of lowercase letters")


class TestImmutability:
    base = resource({"trainingDataUrl": URL, "ttlSecondsAfterFinished": 60})

    def update(self, admission, **changes):
        new = copy.deepcopy(self.base)
        for key, value in changes.items():
            if value is None:
                new["spec"].pop(key, None)
            else:
                new["spec"][key] = value
        return admission.admit(new, old=self.base)

    def test_suspend_and_ttl_may_change(self, admission):
        assert self.update(admission, suspend=True) == []
        assert self.update(admission, ttlSecondsAfterFinished=3600) == []
        assert self.update(admission, ttlSecondsAfterFinished=None) == []
        assert set(MUTABLE_SPEC_FIELDS) == {"suspend", "ttlSecondsAfterFinished"}

    @pytest.mark.parametrize(("field", "value"), [
        ("rank", 64), ("numberOfSteps", 100), ("trainingDataUrl", "s3://a/b.zip"),
        ("validation", [{"videoUrl": "s3://a/c.mp4"}]), ("withAudio", True),
    ])
    def test_training_fields_may_not(self, admission, field, value):
        errors = self.update(admission, **{field: value})
        assert errors and all("cannot be" in e for e in errors), errors
        assert any(field in e for e in errors)

    def test_optional_fields_may_not_be_added(self, admission):
        [error] = self.update(admission, priorityClassName="high")
        assert error.startswith(".spec: priorityClassName cannot be added or removed")


# --- the CRD layer and the model give the same verdict on random specs --------------

def _around(low: int, high: int, *extra: int) -> st.SearchStrategy[int]:
    edges = {low - 1, low, low + 1, high - 1, high, high + 1, *extra}
    return st.one_of(st.sampled_from(sorted(edges)), st.integers(low - 5, high + 5))


def _urls(*good: str) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    bad = ["ftp://a/b.zip", "https://", "clips.zip", "https://a/b c.zip", "gs://a/b"]
    return st.sampled_from(good), st.sampled_from([*good, *bad])


_VIDEO_URLS = _urls(URL, "s3://bucket/closing.mp4", "file:///data/closing.mp4")
# field: (valid values, values around every boundary and rule)
FIELDS: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]] = {
    "trainingDataUrl": _urls(URL, "s3://bucket/data.zip", "file:///data/a.zip"),
    "rank": (st.sampled_from([8, 16, 32, 64, 128]), st.sampled_from([0, 12, 32, 256])),
    "numberOfSteps": (st.integers(100, 20000), _around(100, 20000)),
    "learningRate": (st.floats(1e-7, 0.01), st.one_of(
        st.sampled_from([-1.0, 0.0, 1e-9, 0.0002, 0.01, 0.010000001, 0.05, 1.0, 1e6,
                         float("inf"), float("-inf"), float("nan")]),
        st.floats(allow_nan=True, allow_infinity=True))),
    "conditioningFrames": (st.sampled_from([8, 16, 24]), _around(8, 121, 16, 88, 96, 112, 120)),
    "numberOfFrames": (st.integers(25, 121), _around(9, 121, 16, 17, 88, 89, 96, 97, 113)),
    "validationNumberOfFrames": (st.integers(25, 121), _around(9, 121, 17, 25, 89, 97)),
    "frameRate": (st.integers(8, 60), _around(8, 60)),
    "validationFrameRate": (st.integers(8, 60), _around(8, 60)),
    "resolution": (st.sampled_from(["low", "medium", "high"]), st.just("ultra")),
    "aspectRatio": (st.sampled_from(["16:9", "1:1", "9:16"]), st.just("4:3")),
    "splitInputDurationThreshold": (st.floats(1.0, 60.0), st.sampled_from([0.5, 1.0, 60.0, 60.5])),
    "stgScale": (st.floats(0.0, 3.0), st.sampled_from([-0.1, 0.0, 3.0, 3.1])),
    "withAudio": (st.booleans(), st.just("true")),
    "triggerPhrase": (st.text(max_size=20), st.just("x" * 1001)),
    "validation": (
        st.lists(st.fixed_dictionaries({"videoUrl": _VIDEO_URLS[0]},
                                       optional={"prompt": st.text(max_size=5)}), max_size=2),
        st.lists(st.fixed_dictionaries({}, optional={"videoUrl": _VIDEO_URLS[1]}), max_size=3),
    ),
    "gpus": (st.integers(1, 8), _around(1, 8)),
    "backoffLimit": (st.integers(0, 100), _around(0, 100)),
    "ttlSecondsAfterFinished": (st.integers(0, 10**6), st.integers(-2, 1)),
    "model": (
        st.sampled_from([{"claimName": "m"}, {"url": "s3://m/ltx"}]),
        st.sampled_from([{}, {"claimName": "m", "url": "s3://m"}, {"url": "http://m"}]),
    ),
    "tolerations": (
        st.lists(st.fixed_dictionaries({"key": st.just("gpu")},
                                       optional={"operator": st.sampled_from(["Exists", "Equal"])}),
                 max_size=2),
        st.lists(st.fixed_dictionaries(
            {"key": st.just("gpu")},
            optional={"operator": st.sampled_from(["Exists", "Equal", "Maybe"]),
                      "value": st.sampled_from(["", "x"])}), max_size=2),
    ),
    "numberOfStep": (st.nothing(), st.just(5)),  # a typo of numberOfSteps
}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """Valid values for a random subset of fields, then 0–3 fields pushed to an edge."""
    spec = {"trainingDataUrl": draw(FIELDS["trainingDataUrl"][0])}
    for field, (valid, _) in FIELDS.items():
        if not valid.is_empty and draw(st.booleans()):
            spec[field] = draw(valid)
    for field in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        spec[field] = draw(FIELDS[field][1])
    return spec


SPECS = specs()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=SPECS)
def test_crd_and_model_agree_on_random_specs(admission, spec):
    crd_errors = admission.admit(resource(spec))
    try:
        parse_spec(copy.deepcopy(spec))
        model_errors: list[str] = []
    except SpecError as exc:
        model_errors = exc.problems
    assert bool(crd_errors) == bool(model_errors), (crd_errors, model_errors)
