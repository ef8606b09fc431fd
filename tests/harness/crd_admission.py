"""What the API server does with an LtxExtendTraining before storing it.

Defaulting, the structural schema (bounds, enums, types, lengths) and every CEL
`x-kubernetes-validations` rule, evaluated with cel-python. Unknown fields are
refused, as `kubectl apply`'s default strict field validation does. The tests use
it to show the CRD and the spec model give the same verdict.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import celpy
import jsonschema


def _draft4(node: Any) -> Any:
    """The structural schema as JSON Schema draft 4, unknown fields refused."""
    if isinstance(node, list):
        return [_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft4(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in schema defaults the way the API server does (recursively)."""
    if isinstance(value, dict):
        for key, prop in schema.get("properties", {}).items():
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                apply_defaults(prop, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(value) - set(schema.get("properties", {})):
                apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(schema["items"], item)
    return value


#: what the API server requires of every object's name (a DNS subdomain), in its words
SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. "
    f"'example.com', regex used for validation is '{SUBDOMAIN}')")


def _name_errors(obj: dict[str, Any]) -> list[str]:
    name = (obj.get("metadata") or {}).get("name") or ""
    if len(name) <= 253 and re.fullmatch(SUBDOMAIN, name):
        return []
    return [f'.metadata.name: "{name}": {SUBDOMAIN_MESSAGE}']


class Admission:
    def __init__(self, crd: dict[str, Any]):
        self.schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        draft4 = _draft4(self.schema)
        # the API server checks metadata itself: the schema only declares the name there
        draft4["properties"]["metadata"].pop("additionalProperties", None)
        self._validator = jsonschema.Draft4Validator(draft4)
        self._env = celpy.Environment()
        self._programs: dict[str, Any] = {}

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
        """Errors the API server would answer with; [] means the object is stored."""
        try:  # what kubectl sends is JSON: NaN and infinities never reach the schema
            json.dumps(obj, allow_nan=False)
        except ValueError as exc:
            return [f"<root>: the object cannot be sent as JSON: {exc}"]
        obj = apply_defaults(self.schema, copy.deepcopy(obj))
        if old is not None:
            old = apply_defaults(self.schema, copy.deepcopy(old))
        errors = [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in self._validator.iter_errors(obj)
        ]
        if errors:  # the API server does not run CEL on values of the wrong shape
            return errors
        return _name_errors(obj) + self._cel_errors(self.schema, obj, old, "")

    def _program(self, expr: str) -> Any:
        if expr not in self._programs:
            self._programs[expr] = self._env.program(self._env.compile(expr))
        return self._programs[expr]

    def evaluate(self, expr: str, value: Any, old: Any = None) -> Any:
        activation = {"self": celpy.json_to_cel(value)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        return self._program(expr).evaluate(activation)

    def _cel_errors(self, schema: dict[str, Any], value: Any, old: Any, path: str) -> list[str]:
        errors = []
        for rule in schema.get("x-kubernetes-validations", ()):
            transition = "oldSelf" in rule["rule"]
            if transition and old is None:
                continue  # transition rules only run on updates of correlated values
            try:
                ok = bool(self.evaluate(rule["rule"], value, old if transition else None))
            except Exception as exc:  # an evaluation error rejects the object too
                errors.append(f"{path or '<root>'}: rule {rule['rule']!r} failed: {exc}")
                continue
            if not ok:
                if "messageExpression" in rule:
                    message = str(self.evaluate(rule["messageExpression"], value))
                else:
                    message = rule["message"]
                errors.append(f"{path + rule.get('fieldPath', '') or '<root>'}: {message}")
        if isinstance(value, dict):
            for key, prop in schema.get("properties", {}).items():
                if key in value:
                    old_value = old.get(key) if isinstance(old, dict) else None
                    errors += self._cel_errors(prop, value[key], old_value, f"{path}.{key}")
        elif isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):  # atomic lists: items are not correlated
                errors += self._cel_errors(schema["items"], item, None, f"{path}[{index}]")
        return errors
