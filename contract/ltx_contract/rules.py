"""Cross-field rules, each defined once for every layer.

A rule reads the object as the Kubernetes API server stores it (camelCase keys,
defaults applied, frame counts *not* snapped), so that its Python check and its
CEL expression judge exactly the same thing. The pydantic model runs the Python
side; the CRD generator writes the CEL side into `x-kubernetes-validations`; the
test suite evaluates both and shows they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Latent frames are 8× compressed in time; a clip holds 8k+1 pixel frames.
TEMPORAL_COMPRESSION = 8


def snap_frames(requested: int) -> int:
    """Snap a frame count down to the nearest valid 8k+1 count (96 → 89)."""
    return requested - (requested - 1) % TEMPORAL_COMPRESSION


def snap_frames_cel(expr: str) -> str:
    """`snap_frames` written in CEL, over the integer expression `expr`."""
    return f"({expr} - ({expr} - 1) % {TEMPORAL_COMPRESSION})"


_DIGITS = "[" + ", ".join(f"'{d}'" for d in range(10)) + "]"


def cel_decimal(expr: str) -> str:
    """The decimal text of a count from 0 to 999 (every count a message quotes: frames),
    in CEL, for a `messageExpression`.

    Not `string(expr)`: the API server estimates the cost of each CEL expression before it
    accepts a CRD, and it cannot bound the length of `string(int)`, so a message that
    concatenates one is estimated far over budget and the whole CRD is refused. Digits
    picked from a list of one-character strings have a known length."""
    return (f"({expr} >= 100 ? {_DIGITS}[{expr} / 100 % 10] : '') + "
            f"({expr} >= 10 ? {_DIGITS}[{expr} / 10 % 10] : '') + {_DIGITS}[{expr} % 10]")


@dataclass(frozen=True)
class Rule:
    """One validation rule with a Python and a CEL form that must agree.

    `field` is the camelCase field the error is reported on (the CRD's fieldPath);
    `check`/`message` take the stored object; `cel`/`message_cel` are their CEL forms
    over `self`.
    """

    field: str
    check: Callable[[Mapping[str, Any]], bool]
    message: Callable[[Mapping[str, Any]], str]
    cel: str
    message_cel: str

    def violation(self, obj: Mapping[str, Any]) -> str | None:
        return None if self.check(obj) else self.message(obj)

    def crd_validation(self) -> dict[str, Any]:
        return {
            "rule": self.cel,
            "messageExpression": self.message_cel,
            "fieldPath": f".{self.field}",
            "reason": "FieldValueInvalid",
        }


def _suffix_shorter_than(frames_field: str) -> Rule:
    """The clean suffix may not cover the whole clip: a lead-in must be left."""
    snapped = snap_frames_cel(f"self.{frames_field}")

    def message(obj: Mapping[str, Any]) -> str:
        requested = obj[frames_field]
        shown = str(snap_frames(requested))
        if snap_frames(requested) != requested:
            shown += f", snapped down from {requested}"
        return (
            f"conditioningFrames ({obj['conditioningFrames']}) must be smaller than "
            f"{frames_field} ({shown}): the suffix may not cover the whole clip, "
            "there must be a lead-in left to generate"
        )

    return Rule(
        field="conditioningFrames",
        check=lambda o: o["conditioningFrames"] < snap_frames(o[frames_field]),
        message=message,
        cel=f"self.conditioningFrames < {snapped}",
        message_cel=(
            f"'conditioningFrames (' + {cel_decimal('self.conditioningFrames')} + ') must be "
            f"smaller than {frames_field} (' + {cel_decimal(snapped)} + "
            f"({snapped} != self.{frames_field} ? ', snapped down from ' + "
            f"{cel_decimal(f'self.{frames_field}')} : '') + '): the suffix may not cover the "
            "whole clip, there must be a lead-in left to generate'"
        ),
    )


def _url_scheme(field: str, schemes: tuple[str, ...]) -> Rule:
    # The value is never echoed: URLs may carry credentials or signed query strings.
    names = ", ".join(f"{s}://" for s in schemes[:-1]) + f" or {schemes[-1]}://"
    text = f"{field} must be an {names} URL"  # "an http…", "an s3…"
    pattern = "^(" + "|".join(schemes) + ")://[^\\\\s]+$"
    return Rule(
        field=field,
        check=lambda o: _matches_scheme(o.get(field), schemes),
        message=lambda o: text,
        cel=f"!has(self.{field}) || self.{field}.matches('{pattern}')",
        message_cel=repr(text),
    )


def _matches_scheme(url: Any, schemes: tuple[str, ...]) -> bool:
    if url is None:
        return True
    scheme, sep, rest = str(url).partition("://")
    return bool(sep) and scheme in schemes and bool(rest) and not any(c.isspace() for c in rest)


CONDITIONING_FRAMES_MULTIPLE_OF_8 = Rule(
    field="conditioningFrames",
    check=lambda o: o["conditioningFrames"] % TEMPORAL_COMPRESSION == 0,
    message=lambda o: (
        f"conditioningFrames ({o['conditioningFrames']}) must be a multiple of 8 "
        "(8, 16, 24, …)"
    ),
    cel=f"self.conditioningFrames % {TEMPORAL_COMPRESSION} == 0",
    message_cel=(
        f"'conditioningFrames (' + {cel_decimal('self.conditioningFrames')} + ') must be a "
        "multiple of 8 (8, 16, 24, …)'"
    ),
)

SUFFIX_SHORTER_THAN_TRAINING_CLIP = _suffix_shorter_than("numberOfFrames")
SUFFIX_SHORTER_THAN_VALIDATION_CLIP = _suffix_shorter_than("validationNumberOfFrames")

TRAINING_DATA_URL = _url_scheme("trainingDataUrl", ("http", "https", "s3", "file"))
VALIDATION_VIDEO_URL = _url_scheme("videoUrl", ("http", "https", "s3", "file"))
MODEL_URL = _url_scheme("url", ("s3", "file"))
OUTPUT_URL = _url_scheme("url", ("s3", "file"))

MODEL_SOURCE_EXACTLY_ONE = Rule(
    field="claimName",
    check=lambda o: (o.get("claimName") is None) != (o.get("url") is None),
    message=lambda o: "exactly one of claimName (a PVC) or url (a store prefix) must be set",
    cel="has(self.claimName) != has(self.url)",
    message_cel="'exactly one of claimName (a PVC) or url (a store prefix) must be set'",
)

CHECKPOINT_SUFFIX = ".safetensors"


def _is_checkpoint(o: Mapping[str, Any]) -> bool:
    location = o.get("url") if o.get("url") is not None else o.get("subPath")
    return location is not None and str(location).endswith(CHECKPOINT_SUFFIX)


def _is_url_or_relative_path(value: Any) -> bool:
    if value is None:
        return True
    text = str(value)
    if "://" in text:
        return _matches_scheme(text, ("s3", "file"))
    return bool(text) and not text.startswith("/") and ".." not in text.split("/")


TEXT_ENCODER_FORM = ("textEncoder must be an s3:// or file:// URL, or a path relative to the "
                     "folder of the checkpoint (not absolute, without ..)")

MODEL_TEXT_ENCODER = Rule(
    field="textEncoder",
    check=lambda o: _is_url_or_relative_path(o.get("textEncoder")),
    message=lambda o: TEXT_ENCODER_FORM,
    cel="!has(self.textEncoder) || (self.textEncoder.contains('://') ? "
    "self.textEncoder.matches('^(s3|file)://[^\\\\s]+$') : (self.textEncoder != '' && "
    "!self.textEncoder.startsWith('/') && !self.textEncoder.matches('(^|/)[.][.](/|$)')))",
    message_cel=repr(TEXT_ENCODER_FORM),
)

#: the base model releases a spec may name (`model.version`): strings, so that an unquoted
#: YAML number cannot pass for one
MODEL_VERSIONS = ("ltx-2.3", "ltx-2.5")

MODEL_TEXT_ENCODER_WITH_CHECKPOINT = Rule(
    field="textEncoder",
    check=lambda o: o.get("textEncoder") is None or _is_checkpoint(o),
    message=lambda o: (
        "textEncoder goes with a checkpoint only (a url or subPath ending in "
        f"{CHECKPOINT_SUFFIX}): a model folder has its own"),
    cel="!has(self.textEncoder) || (has(self.url) ? self.url.endsWith('.safetensors') : "
    "(has(self.subPath) && self.subPath.endsWith('.safetensors')))",
    message_cel="'textEncoder goes with a checkpoint only (a url or subPath ending in "
    ".safetensors): a model folder has its own'",
)

MODEL_LTX23_TEXT_ENCODER = Rule(
    field="textEncoder",
    check=lambda o: not (o.get("version") == "ltx-2.3" and _is_checkpoint(o)
                         and o.get("textEncoder") is None),
    message=lambda o: ("textEncoder (the Gemma-3 folder) must be set for an ltx-2.3 "
                       "single-file checkpoint: the checkpoint holds no text encoder"),
    cel="!(has(self.version) && self.version == 'ltx-2.3' && (has(self.url) ? "
    "self.url.endsWith('.safetensors') : (has(self.subPath) && "
    "self.subPath.endsWith('.safetensors')))) || has(self.textEncoder)",
    message_cel="'textEncoder (the Gemma-3 folder) must be set for an ltx-2.3 single-file "
    "checkpoint: the checkpoint holds no text encoder'",
)


def _pack_part(name: str) -> Rule:
    """videoVae / audioVae: an LTX-2.5 pack's file, named like textEncoder, with a
    checkpoint only (a model folder and a 2.3 single file hold their own VAEs)."""
    form = (f"{name} must be an s3:// or file:// URL, or a path relative to the folder of the "
            "checkpoint (not absolute, without ..), and goes with an ltx-2.5 checkpoint only")
    return Rule(
        field=name,
        check=lambda o: o.get(name) is None or (_is_url_or_relative_path(o.get(name))
                                                and _is_checkpoint(o)
                                                and o.get("version") != "ltx-2.3"),
        message=lambda o: form,
        cel=f"!has(self.{name}) || (((self.{name}.contains('://') ? "
        f"self.{name}.matches('^(s3|file)://[^\\\\s]+$') : (self.{name} != '' && "
        f"!self.{name}.startsWith('/') && !self.{name}.matches('(^|/)[.][.](/|$)'))) && "
        "(has(self.url) ? self.url.endsWith('.safetensors') : (has(self.subPath) && "
        "self.subPath.endsWith('.safetensors')))) && (!has(self.version) || "
        "self.version != 'ltx-2.3'))",
        message_cel=repr(form),
    )


MODEL_VIDEO_VAE = _pack_part("videoVae")
MODEL_AUDIO_VAE = _pack_part("audioVae")

TOLERATION_EXISTS_HAS_NO_VALUE = Rule(
    field="value",
    check=lambda o: o.get("operator") != "Exists" or not o.get("value"),
    message=lambda o: "a toleration with operator Exists must not set a value",
    cel="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || "
    "self.value == ''",
    message_cel="'a toleration with operator Exists must not set a value'",
)
