"""The model releases and how a transformer config tells them apart (below the profile and
the shapes, which both need it)."""

from __future__ import annotations

from typing import Any, Literal

Version = Literal["2.0", "2.3", "2.5"]
VERSIONS: tuple[Version, ...] = ("2.0", "2.3", "2.5")


def version_name(version: str) -> str:
    """"2.3" → "ltx-2.3": the name `spec.model.version`, LoRA files and the status use."""
    return f"ltx-{version}"


def transformer_version(transformer: dict[str, Any]) -> Version:
    """The release a transformer config is of: 2.5 has no video feed-forward bias, 2.3 has
    prompt modulation, 2.0 neither."""
    if transformer.get("ff_bias", True) is False:
        return "2.5"
    return "2.3" if transformer.get("cross_attn_mod") else "2.0"
