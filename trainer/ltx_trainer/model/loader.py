"""The model type: what training, previews, `extend` and the cache encoder ask of a base
model, and the two kinds defined here — a diffusers-format model folder and a release's
shapes with seeded random weights. The official single-file checkpoint with its Gemma-3
folder (`single_file.py`) and LTX-2.5's split pack (`split_pack.py`) are the other two;
where each comes from is `source.py`.

Every model gives the same things: a name (what a LoRA's config records as its base
model), its version and profile, its shapes (for the memory plan) and `load`, which
returns one component in eval mode, frozen, on a device. A folder's component is loaded
with the class its entry in `model_index.json` names, as diffusers' own pipeline loader
does, so a folder's own vocoder class (the LTX-2.3 `LTX2VocoderWithBWE`) or any later
class loads with its own weights. bf16 on GPU, fp32 on CPU. Each stage loads only the
parts it needs, so the text encoder and the VAEs are gone from memory before the first
training step.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch

from .device import compute_dtype, default_device
from .profile import ModelProfile, folder_profile, profile_from_shapes
from .shapes import ModelShapes

__all__ = ["FolderModel", "Model", "ModelLike", "RandomModel", "WithDtype", "as_model",
           "compute_dtype", "default_device", "load_component", "read_profile"]

#: libraries whose classes a model_index.json names directly; any other library name is
#: a diffusers pipeline module (e.g. "ltx2" → diffusers.pipelines.ltx2), as diffusers reads it
TOP_LEVEL_LIBRARIES = ("diffusers", "transformers")
UNWEIGHTED = ("tokenizer", "scheduler")


class Model(Protocol):
    """A base model: a folder (`FolderModel`), a checked single file
    (`single_file.SingleFileModel`), a checked split pack (`split_pack.SplitPackModel`) or
    random weights of a release's shapes (`RandomModel`)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def profile(self) -> ModelProfile: ...

    @property
    def shapes(self) -> ModelShapes: ...

    def load(self, component: str, device: torch.device, dtype: torch.dtype | None = None
             ) -> Any:
        """One component in eval mode and frozen on `device`, its weights in `dtype`
        (default: the device's compute dtype); tokenizer and scheduler as they are."""
        ...


#: what the public entry points take: a model, or a diffusers folder by its path
ModelLike = Model | str | os.PathLike[str]


def as_model(model: ModelLike) -> Model:
    """A model as it is, or the diffusers folder at a path."""
    return FolderModel(Path(model)) if isinstance(model, str | os.PathLike) else model


def load_component(model: ModelLike, name: str, device: torch.device,
                   dtype: torch.dtype | None = None) -> Any:
    """One component of a model or of the folder at a path (`Model.load`)."""
    return as_model(model).load(name, device, dtype)


def read_profile(model: ModelLike) -> ModelProfile:
    """The profile of a model or of the folder at a path, from its configs alone."""
    return as_model(model).profile


def component_class(folder: Path, name: str) -> type:
    """The class `model_index.json` names for component `name`."""
    index = json.loads((Path(folder) / "model_index.json").read_text())
    entry = index.get(name)
    if not entry or entry[0] is None:
        raise FileNotFoundError(f"{folder}/model_index.json names no {name} component")
    library, class_name = entry
    module_name = library if library in TOP_LEVEL_LIBRARIES else f"diffusers.pipelines.{library}"
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise FileNotFoundError(
            f"{folder}: the {name} class {library}.{class_name} is not available in the "
            "installed diffusers/transformers") from None


@dataclass(frozen=True)
class FolderModel:
    """A diffusers-format model folder; its profile and shapes read from its configs."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def version(self) -> str:
        return self.profile.version

    @cached_property
    def profile(self) -> ModelProfile:
        return folder_profile(self.path)

    @cached_property
    def shapes(self) -> ModelShapes:
        return ModelShapes.from_folder(self.path)

    def load(self, component: str, device: torch.device, dtype: torch.dtype | None = None
             ) -> Any:
        cls = component_class(self.path, component)
        if component in UNWEIGHTED:
            return cls.from_pretrained(self.path / component)
        loaded = cls.from_pretrained(self.path / component,
                                     torch_dtype=dtype or compute_dtype(device))
        loaded.to(device).eval().requires_grad_(False)
        return loaded


@dataclass(frozen=True)
class RandomModel:
    """A release's shapes with seeded random weights in `dtype`, built straight on the device
    they are loaded to (no checkpoint: what a benchmark of the real step needs, since a
    step's cost depends on shapes, not weights)."""

    shapes: ModelShapes
    seed: int = 0
    dtype: torch.dtype = torch.bfloat16

    @property
    def name(self) -> str:
        return self.shapes.name

    @property
    def version(self) -> str:
        return self.profile.version

    @cached_property
    def profile(self) -> ModelProfile:
        return profile_from_shapes(self.shapes)

    def load(self, component: str, device: torch.device, dtype: torch.dtype | None = None
             ) -> Any:
        from .shapes import build_component

        return build_component(self.shapes, component, device, dtype or self.dtype, self.seed)


@dataclass(frozen=True)
class WithDtype:
    """`model` with its weights loaded in `dtype` on any device (bf16 on a CPU, as on a
    GPU)."""

    model: Model
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def profile(self) -> ModelProfile:
        return self.model.profile

    @property
    def shapes(self) -> ModelShapes:
        return self.model.shapes

    def load(self, component: str, device: torch.device, dtype: torch.dtype | None = None
             ) -> Any:
        return self.model.load(component, device, dtype or self.dtype)
