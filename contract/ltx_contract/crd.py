"""Generate the LtxExtendTraining CRD from the spec and status models.

The structural OpenAPI schema (defaults, enums, bounds, descriptions) comes from the
pydantic JSON schema; the CEL `x-kubernetes-validations` come from the parts'
`__rules__`; immutability is added as transition rules. `ltx-extend crd` prints it and
a test keeps `crds/ltxextendtrainings.yaml` equal to it.
"""

from __future__ import annotations

from typing import Any

import yaml

from . import resource
from .spec import SpecModel, TrainingSpec

#: Spec fields a user may change after creation; every other one is immutable.
MUTABLE_SPEC_FIELDS = ("suspend", "ttlSecondsAfterFinished")

_KEPT = (
    "type", "description", "default", "enum", "minimum", "maximum", "maxLength",
    "minLength", "maxItems", "minItems", "maxProperties", "pattern", "format",
)

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "One-word summary of the training's state."},
    {"name": "Pod", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Running")].reason',
     "description": "The active stage's pod: Running, or why it waits (JobPending, Queued, "
     "Unschedulable, ImagePullBackOff, Preempted, …)."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary",
     "description": "Steps done / total."},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss",
     "description": "Latest training loss."},
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta",
     "description": "Estimated time to the last step, from the trainer's speed."},
    {"name": "Units", "type": "integer", "jsonPath": ".status.billing.units",
     "description": "Billable units recorded."},
    {"name": "Reason", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Failed")].reason',
     "description": "Why the training failed.", "priority": 1},
    {"name": "Steps", "type": "integer", "jsonPath": ".spec.numberOfSteps",
     "description": "Requested optimization steps.", "priority": 1},
    {"name": "Rank", "type": "integer", "jsonPath": ".spec.rank",
     "description": "LoRA rank.", "priority": 1},
    {"name": "Audio", "type": "boolean", "jsonPath": ".spec.withAudio",
     "description": "Joint audio extension.", "priority": 1},
    {"name": "Nodes", "type": "integer", "jsonPath": ".spec.nodes",
     "description": "Nodes of the train Job, each with GPUs GPUs.", "priority": 1},
    {"name": "GPUs", "type": "integer", "jsonPath": ".spec.gpus",
     "description": "GPUs per node (unset: the operator's default).", "priority": 1},
    {"name": "ValLoss", "type": "number", "jsonPath": ".status.validation.loss",
     "description": "The latest validation loss (spec.heldOutShare).", "priority": 1},
    {"name": "BestStep", "type": "integer", "jsonPath": ".status.validation.bestStep",
     "description": "The step with the lowest validation loss.", "priority": 1},
    {"name": "Model", "type": "string", "jsonPath": ".status.modelVersion",
     "description": "The base model's version, read from its files.", "priority": 1},
    {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend",
     "description": "Whether the training is suspended.", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _rules_by_model() -> dict[str, SpecModel]:
    seen: dict[str, Any] = {}
    stack: list[type] = [SpecModel]
    while stack:
        cls = stack.pop()
        seen[cls.__name__] = cls
        stack.extend(cls.__subclasses__())
    return seen


def _openapi(node: dict[str, Any], defs: dict[str, Any], models: dict[str, Any],
             keep_defaults: bool) -> dict[str, Any]:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 schema node."""
    outer = {k: v for k, v in node.items() if k not in ("$ref", "anyOf")}
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        merged = {**defs[name], **outer}
        out = _openapi(merged, defs, models, keep_defaults)
        model = models.get(name)
        if model is not None and model.__rules__:
            out["x-kubernetes-validations"] = [r.crd_validation() for r in model.__rules__]
        return out
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express {node} in a structural schema")
        inner = dict(variants[0])
        inner.update({k: v for k, v in outer.items() if k in ("description", "default")})
        return _openapi(inner, defs, models, keep_defaults)

    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = " ".join(node["description"].split())
    for key in _KEPT:
        if key == "description" or key not in node:
            continue
        if key == "default" and (node["default"] is None or not keep_defaults):
            continue
        out[key] = node[key]
    if "const" in node:
        out["enum"] = [node["const"]]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if "enum" in out and "type" not in out:
        out["type"] = "integer" if all(isinstance(v, int) for v in out["enum"]) else "string"
    if "items" in node:
        out["items"] = _openapi(node["items"], defs, models, keep_defaults)
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {
            key: _openapi(value, defs, models, keep_defaults)
            for key, value in node["properties"].items()
        }
        if node.get("required"):
            out["required"] = list(node["required"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _openapi(
            node["additionalProperties"], defs, models, keep_defaults
        )
    return out


def _schema_of(model: type, keep_defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    models = _rules_by_model()
    schema = _openapi(raw, defs, models, keep_defaults)
    own = models.get(model.__name__)
    if own is not None and own.__rules__:
        schema["x-kubernetes-validations"] = [r.crd_validation() for r in own.__rules__]
    return schema


def _add_immutability(spec: dict[str, Any]) -> None:
    note = "only " + " and ".join(MUTABLE_SPEC_FIELDS) + " can"
    required = set(spec.get("required", ()))
    optional = []
    for field, prop in spec["properties"].items():
        if field in MUTABLE_SPEC_FIELDS:
            continue
        prop.setdefault("x-kubernetes-validations", []).append({
            "rule": "self == oldSelf",
            "message": f"{field} cannot be changed after the training is created; {note}",
        })
        if field not in required and "default" not in prop:
            optional.append(field)
    spec.setdefault("x-kubernetes-validations", []).extend(
        {
            "rule": f"has(self.{field}) == has(oldSelf.{field})",
            "message": f"{field} cannot be added or removed after the training is created; "
            f"{note}",
        }
        for field in optional
    )


def spec_schema() -> dict[str, Any]:
    spec = _schema_of(TrainingSpec, keep_defaults=True)
    spec["description"] = (
        "What to train: the extend-suffix parameters plus where and how the Jobs run."
    )
    _add_immutability(spec)
    return spec


def status_schema() -> dict[str, Any]:
    status = _schema_of(resource.TrainingStatus, keep_defaults=False)
    status["description"] = "Observed state, written by the operator."
    return status


def build_crd() -> dict[str, Any]:
    root = {
        "type": "object",
        "description": (
            "Trains an LTX-2.3 LoRA that extends video backward in time: given a closing "
            "clip it generates the lead-in, optionally with in-sync audio."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # the name, declared so that the name rules can report on it (fieldPath)
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [rule.crd_validation() for rule in resource.NAME_RULES],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{resource.PLURAL}.{resource.GROUP}",
            "labels": {"app.kubernetes.io/name": "ltx-extend"},
        },
        "spec": {
            "group": resource.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.KIND,
                "listKind": f"{resource.KIND}List",
                "plural": resource.PLURAL,
                "singular": resource.SINGULAR,
                "shortNames": list(resource.SHORT_NAMES),
                "categories": list(resource.CATEGORIES),
            },
            "versions": [{
                "name": resource.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


HEADER = (
    "# Generated by `ltx-extend crd` from ltx_contract.spec and ltx_contract.resource.\n"
    "# Do not edit by hand: change the models and run `make crd`.\n"
)


def render_crd() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)
