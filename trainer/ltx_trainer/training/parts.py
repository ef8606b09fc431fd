"""Where the trainer's transformer and text connectors come from, and what they are.

A diffusers model folder (the usual case), the official single-file checkpoint, or a
release's shapes with seeded random weights built straight on the device (no checkpoint:
what a benchmark of the real step needs, since a step's cost depends on shapes, not
weights). Each gives the same three things: the model profile, the shapes (for the
memory plan) and a loader of components in eval mode, frozen, on a device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..model.profile import ModelProfile, profile_from_shapes, read_profile

Loader = Callable[[str, torch.device], Any]


@dataclass(frozen=True)
class ModelParts:
    name: str
    profile: ModelProfile
    shapes: Any  # model.shapes.ModelShapes
    load: Loader

    @classmethod
    def from_model(cls, model: Any, dtype: torch.dtype | None = None) -> ModelParts:
        """A model as `model.source.resolve_model` gives it (a diffusers folder, or a
        checked single-file checkpoint); `dtype`: the weights' (default: the device's
        compute dtype)."""
        from ..model.loader import load_component
        from ..model.shapes import ModelShapes

        shapes = getattr(model, "shapes", None) or ModelShapes.from_model_dir(Path(model))
        return cls(Path(model).name, read_profile(model), shapes,
                   lambda name, device: load_component(model, name, device, dtype))

    @classmethod
    def from_shapes(cls, shapes: Any, seed: int = 0, dtype: torch.dtype = torch.bfloat16
                    ) -> ModelParts:
        """Random weights of `shapes` in `dtype`, built on the device they are loaded to."""
        from ..model.shapes import build_component

        return cls(shapes.name, profile_from_shapes(shapes), shapes,
                   lambda name, device: build_component(shapes, name, device, dtype, seed))

