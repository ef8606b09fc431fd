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

from ..model.profile import ModelProfile, profile_from_configs, read_profile

Loader = Callable[[str, torch.device], Any]


@dataclass(frozen=True)
class ModelParts:
    name: str
    profile: ModelProfile
    shapes: Any  # model.shapes.ModelShapes
    load: Loader

    @classmethod
    def from_folder(cls, model_dir: Path, dtype: torch.dtype | None = None) -> ModelParts:
        """`dtype`: the weights' (default: the device's compute dtype)."""
        from ..model.loader import load_component
        from ..model.shapes import ModelShapes

        model_dir = Path(model_dir)
        return cls(model_dir.name, read_profile(model_dir), ModelShapes.from_model_dir(model_dir),
                   lambda name, device: load_component(model_dir, name, device, dtype))

    @classmethod
    def from_single_file(cls, checkpoint: Path, text_encoder_dir: Path | None = None,
                         dtype: torch.dtype | None = None) -> ModelParts:
        """The official checkpoint (its Gemma folder, `single_file.GEMMA_DIR` beside it by
        default, is only checked: training reads cached text features)."""
        from ..model.single_file import GEMMA_DIR, describe_single_file

        checkpoint = Path(checkpoint)
        files = describe_single_file(checkpoint, text_encoder_dir or checkpoint.parent / GEMMA_DIR)
        return cls(checkpoint.name, _profile(files.shapes), files.shapes,
                   lambda name, device: files.load(name, device, dtype))

    @classmethod
    def from_shapes(cls, shapes: Any, seed: int = 0, dtype: torch.dtype = torch.bfloat16
                    ) -> ModelParts:
        """Random weights of `shapes` in `dtype`, built on the device they are loaded to."""
        from ..model.shapes import build_component

        return cls(shapes.name, _profile(shapes), shapes,
                   lambda name, device: build_component(shapes, name, device, dtype, seed))


def _profile(shapes: Any) -> ModelProfile:
    from ..model.shapes import SCHEDULER, component_class

    return profile_from_configs(shapes.config("transformer"), shapes.config("connectors"),
                                shapes.configs.get("scheduler", SCHEDULER),
                                component_class(shapes, "vocoder").__name__)
