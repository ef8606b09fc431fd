"""Plain-words messages for spec errors: each names the field, the value and the rule."""

from __future__ import annotations

import difflib
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    out: list[str] = []
    for err in exc.errors(include_url=False):
        if err["type"] == "spec_rule":  # one error carrying every broken rule of a part
            where = _where(err["loc"])
            out += [f"{where}: {p}" if where else p for p in err["ctx"]["problems"]]
        else:
            out.append(_describe(err, model))
    return out


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
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


def _bounds(info: Any) -> tuple[Any, Any]:
    low = high = None
    for meta in getattr(info, "metadata", ()):
        if isinstance(meta, annotated_types.Ge):
            low = meta.ge
        elif isinstance(meta, annotated_types.Le):
            high = meta.le
    return low, high


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    parent = _field_info(model, loc[:-1]) if len(loc) > 1 else None
    owner = _inner_model(parent.annotation) if parent else model
    if owner is None:
        return []
    return [f.alias or n for n, f in owner.model_fields.items()]


def _describe(err: Any, model: type[BaseModel]) -> str:
    loc, kind, value, ctx = err["loc"], err["type"], err.get("input"), err.get("ctx") or {}
    field = _where(loc)
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_fields(model, loc), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{field} is not a known field{hint}"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(_field_info(model, loc))
        if low is not None and high is not None:
            return f"{field} ({_shown(value)}) must be between {low} and {high}"
        if kind == "greater_than_equal":
            return f"{field} ({_shown(value)}) must be at least {ctx['ge']}"
        return f"{field} ({_shown(value)}) must be at most {ctx['le']}"
    if kind == "greater_than":
        declared = [m.gt for m in getattr(_field_info(model, loc), "metadata", ())
                    if isinstance(m, annotated_types.Gt)]
        return f"{field} ({_shown(value)}) must be greater than {(declared or [ctx['gt']])[0]}"
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
