"""Loading the LTX-2 components of a model: a diffusers-format model folder, the official
single-file checkpoint with its Gemma-3 folder (`single_file.py`), or LTX-2.5's split pack
(`split_pack.py`). Where each comes from is `source.py`; `load_component` is the one
function training, previews, `extend` and the cache encoder load every component through.

Each component is loaded with the class its entry in `model_index.json` names, as
diffusers' own pipeline loader does, so a folder's own vocoder class (the LTX-2.3
`LTX2VocoderWithBWE`) or any later class loads with its own weights. bf16 on GPU, fp32
on CPU. Each stage loads only the parts it needs, so the text encoder and the VAEs are
gone from memory before the first training step.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, TypeAlias

import torch

from .device import compute_dtype, default_device
from .single_file import SingleFileModel
from .split_pack import SplitPackModel

__all__ = ["Model", "compute_dtype", "default_device", "load_component"]

#: a model: a diffusers model folder, a single-file checkpoint checked with its Gemma-3
#: folder (`single_file.describe_single_file`), or a checked LTX-2.5 split pack
#: (`split_pack.describe_split_pack`); `Path(model).name` names any
Model: TypeAlias = Path | SingleFileModel | SplitPackModel

#: libraries whose classes a model_index.json names directly; any other library name is
#: a diffusers pipeline module (e.g. "ltx2" → diffusers.pipelines.ltx2), as diffusers reads it
TOP_LEVEL_LIBRARIES = ("diffusers", "transformers")
UNWEIGHTED = ("tokenizer", "scheduler")


def component_class(model_dir: Path, name: str) -> type:
    """The class `model_index.json` names for component `name`."""
    index = json.loads((Path(model_dir) / "model_index.json").read_text())
    entry = index.get(name)
    if not entry or entry[0] is None:
        raise FileNotFoundError(f"{model_dir}/model_index.json names no {name} component")
    library, class_name = entry
    module_name = library if library in TOP_LEVEL_LIBRARIES else f"diffusers.pipelines.{library}"
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise FileNotFoundError(
            f"{model_dir}: the {name} class {library}.{class_name} is not available in the "
            "installed diffusers/transformers") from None


def load_component(model: Model, name: str, device: torch.device,
                   dtype: torch.dtype | None = None) -> Any:
    """One component of `model`, in eval mode and frozen, on `device` (tokenizer and
    scheduler as they are)."""
    if isinstance(model, SingleFileModel | SplitPackModel):
        return model.load(name, device, dtype)
    model_dir = Path(model)
    cls = component_class(model_dir, name)
    if name in UNWEIGHTED:
        return cls.from_pretrained(model_dir / name)
    component = cls.from_pretrained(model_dir / name, torch_dtype=dtype or compute_dtype(device))
    component.to(device).eval().requires_grad_(False)
    return component
