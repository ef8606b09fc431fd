"""Reading specs: one reader for `validate`, `prepare`, `train` and `job`.

A `.json` file (and `job --spec-json`) is read as JSON: exponents are numbers (`2e-4`),
and NaN, Infinity and out-of-range numbers are refused, as JSON has no such values.
Anything else is read as YAML, with YAML 1.2's numbers (`2e-4` is a number there too,
as kubectl reads it; PyYAML's YAML 1.1 would make it a string). In both, a whole
number written as a float (`1e3`, `2000.0`) is an integer, as the Kubernetes API
server takes it for an integer field, and a key given twice is refused.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from ltx_contract.resource import parse_resource
from ltx_contract.spec import SpecError, TrainingSpec, parse_spec

Format = Literal["json", "yaml"]


class DocumentError(ValueError):
    """A file or text that is not a readable JSON or YAML document."""


def _whole(value: Any) -> Any:
    """Floats that hold whole numbers become ints, everywhere in a document."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _json_number(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise DocumentError(f"the number {text} is out of range")
    return value


def _json_constant(name: str) -> Any:
    raise DocumentError(f"{name} is not a number in JSON (JSON has no NaN or Infinity)")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DocumentError(f"the key {key!r} is given twice")
        out[key] = value
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 exponent floats and duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_documents(text: str, fmt: Format, name: str = "the spec") -> list[Any]:
    """The documents in `text` (JSON holds one; YAML may hold several, `---`-separated);
    `name` is what YAML's messages call it."""
    if fmt == "json":
        try:
            doc = json.loads(text, parse_float=_json_number, parse_constant=_json_constant,
                             object_pairs_hook=_json_object)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"is not valid JSON: {exc}") from None
        except DocumentError as exc:
            raise DocumentError(f"is not valid JSON: {exc}") from None
        return [_whole(doc)]
    try:
        stream = io.StringIO(text)
        stream.name = name  # PyYAML's marks name the stream they point into
        docs = list(yaml.load_all(stream, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise DocumentError(f"is not valid YAML: {exc}") from None
    return [_whole(doc) for doc in docs if doc is not None]


def format_of(path: Path) -> Format:
    return "json" if path.suffix.lower() == ".json" else "yaml"


def read_documents(path: Path) -> list[Any]:
    """The documents in a spec file; DocumentError names the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(f"{path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DocumentError(f"{path}: is not UTF-8 text") from None
    try:
        return load_documents(text, format_of(path), str(path))
    except DocumentError as exc:
        raise DocumentError(f"{path}: {exc}") from None


def is_resource(doc: Any) -> bool:
    return isinstance(doc, dict) and ("kind" in doc or "apiVersion" in doc)


def spec_of(doc: Any) -> TrainingSpec:
    """The spec of one document: a whole resource, a bare spec or an API request body."""
    return parse_resource(doc)[1] if is_resource(doc) else parse_spec(doc)


def read_spec(path: Path) -> TrainingSpec:
    """The spec in a file holding one resource or request; raises SpecError."""
    try:
        documents = read_documents(path)
    except DocumentError as exc:
        raise SpecError([str(exc)]) from None
    if len(documents) != 1:
        raise SpecError([f"{path}: must hold exactly one resource or request, "
                         f"not {len(documents)}"])
    return spec_of(documents[0])


def spec_from_text(text: str, fmt: Format = "json") -> TrainingSpec:
    """The spec a Job receives as text (`--spec-json`, `LTX_EXTEND_SPEC`); raises SpecError."""
    try:
        documents = load_documents(text, fmt)
    except DocumentError as exc:
        raise SpecError([f"the spec {exc}"]) from None
    if len(documents) != 1:
        raise SpecError(["the spec must be exactly one document"])
    return spec_of(documents[0])


def resource_name(path: Path) -> str | None:
    """metadata.name of the resource in `path`, if it holds one."""
    try:
        documents = read_documents(path)
    except DocumentError:
        return None
    if documents and is_resource(documents[0]):
        name = (documents[0].get("metadata") or {}).get("name")
        return str(name) if name else None
    return None


def read_spec_or_report(path: Path) -> TrainingSpec | None:
    """The spec in `path`, or None after printing every problem with it to stderr (the
    commands' way of refusing a bad file: every problem, no traceback)."""
    import sys

    try:
        return read_spec(path)
    except SpecError as exc:
        print(f"{path} is invalid:", *(f"  - {p}" for p in exc.problems), sep="\n",
              file=sys.stderr)
        return None
