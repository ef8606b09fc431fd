"""Plain-words messages for spec errors: each names the field, the value and the rule.

Fields are named as the user wrote them: a request in the extend-suffix API's
snake_case hears `learning_rate`, a resource or camelCase spec `learningRate`.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError


def describe_errors(exc: ValidationError, model: type[BaseModel], data: Any = None
                    ) -> list[str]:
    """One message per problem; `data` (the input) decides how fields are named."""
    name = _namer(model, data)
    out: list[str] = []
    for err in exc.errors(include_url=False):
        if err["type"] == "spec_rule":  # one error carrying every broken rule of a part
            where = _where(err["loc"], name)
            out += [f"{where}: {name.text(p)}" if where else name.text(p)
                    for p in err["ctx"]["problems"]]
        else:
            out.append(_describe(err, model, name))
    return out


class _Namer:
    """Turns the models' camelCase field names into the user's spelling."""

    def __init__(self, renames: dict[str, str]):
        self.renames = renames
        words = "|".join(sorted(map(re.escape, renames), key=len, reverse=True))
        self._pattern = re.compile(rf"\b({words})\b") if words else None

    def __call__(self, field: str) -> str:
        return self.renames.get(field, field)

    def text(self, message: str) -> str:
        if self._pattern is None:
            return message
        return self._pattern.sub(lambda m: self.renames[m.group(1)], message)


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every model nested in its fields."""
    found: list[type[BaseModel]] = []
    stack = [model]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.append(current)
        for info in current.model_fields.values():
            inner = _inner_model(info.annotation)
            if inner is not None:
                stack.append(inner)
    return found


def _written_keys(model: type[BaseModel], data: Any, out: set[str]) -> set[str]:
    """Every key of `data` that names a field of `model` or of a nested part."""
    if isinstance(data, list):
        for item in data:
            _written_keys(model, item, out)
    elif isinstance(data, dict):
        for key, value in data.items():
            info = next((f for n, f in model.model_fields.items() if key in (n, f.alias)),
                        None)
            if info is None:
                continue
            out.add(key)
            inner = _inner_model(info.annotation)
            if inner is not None:
                _written_keys(inner, value, out)
    return out


def _namer(model: type[BaseModel], data: Any) -> _Namer:
    """snake_case names when the user wrote snake_case and no camelCase, else as is."""
    pairs = {f.alias: n for m in _models(model) for n, f in m.model_fields.items()
             if f.alias and f.alias != n}
    written = _written_keys(model, data, set())
    snake = bool(written & set(pairs.values())) and not written & set(pairs)
    return _Namer(pairs if snake else {})


def _where(loc: tuple[Any, ...], name: Callable[[str], str] = str) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{name(part)}" if out else name(str(part))
    return out


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return str(value)


def _field_info(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The FieldInfo at `loc` (aliases or names), following nested models."""
    info = None
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = next(
            (f for n, f in current.model_fields.items() if part in (n, f.alias)), None
        )
        if info is None:
            return None
        current = _inner_model(info.annotation)
    return info


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as `Model | None` or `list[Model]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _bounds(info: Any) -> tuple[Any, Any, bool]:
    """(low, high, low is exclusive) as the field declares them."""
    low = high = None
    exclusive = False
    for meta in getattr(info, "metadata", ()):
        if isinstance(meta, annotated_types.Ge):
            low = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            low, exclusive = meta.gt, True
        elif isinstance(meta, annotated_types.Le):
            high = meta.le
    return low, high, exclusive


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    parent = _field_info(model, loc[:-1]) if len(loc) > 1 else None
    owner = _inner_model(parent.annotation) if parent else model
    if owner is None:
        return []
    return [f.alias or n for n, f in owner.model_fields.items()]


def _describe(err: Any, model: type[BaseModel], name: _Namer) -> str:
    loc, kind, value, ctx = err["loc"], err["type"], err.get("input"), err.get("ctx") or {}
    field = _where(loc, name)
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        known = [name(k) for k in _known_fields(model, loc)]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{field} is not a known field{hint}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than"):
        low, high, exclusive = _bounds(_field_info(model, loc))
        if low is not None and high is not None:
            if exclusive:
                return f"{field} ({_shown(value)}) must be greater than {low} and at most {high}"
            return f"{field} ({_shown(value)}) must be between {low} and {high}"
        if kind == "greater_than_equal":
            return f"{field} ({_shown(value)}) must be at least {ctx['ge']}"
        if kind == "greater_than":
            return f"{field} ({_shown(value)}) must be greater than {ctx['gt']}"
        return f"{field} ({_shown(value)}) must be at most {ctx['le']}"
    if kind == "finite_number":
        return f"{field} ({_shown(value)}) must be a finite number"
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "").replace("'", "")
        return f"{field} ({_shown(value)}) must be one of {expected}"
    if kind == "too_long" and isinstance(value, (list, dict)):
        noun = "entries" if isinstance(value, list) else "keys"
        return f"{field} has {len(value)} {noun}; at most {ctx['max_length']} are allowed"
    if kind == "string_too_long":
        return f"{field} is longer than the {ctx['max_length']} characters allowed"
    if kind.startswith(("int_", "float_", "bool_", "string_", "dict_", "list_", "model_")):
        wanted = {
            "int": "a whole number", "float": "a number", "bool": "true or false",
            "string": "a string", "dict": "a mapping", "list": "a list", "model": "a mapping",
        }[kind.split("_")[0]]
        return f"{field} ({_shown(value)}) must be {wanted}"
    return f"{field}: {err['msg']}" if field else err["msg"]
