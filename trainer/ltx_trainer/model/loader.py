"""Loading the LTX-2.3 components from a diffusers-format model folder.

bf16 on GPU, fp32 on CPU. Each stage loads only the parts it needs, so the text
encoder and the VAEs are gone from memory before the first training step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

#: component folder → (module, class name)
COMPONENTS = {
    "transformer": ("diffusers", "LTX2VideoTransformer3DModel"),
    "vae": ("diffusers", "AutoencoderKLLTX2Video"),
    "audio_vae": ("diffusers", "AutoencoderKLLTX2Audio"),
    "connectors": ("diffusers.pipelines.ltx2", "LTX2TextConnectors"),
    "text_encoder": ("transformers", "Gemma3ForConditionalGeneration"),
    "vocoder": ("diffusers.pipelines.ltx2.vocoder", "LTX2Vocoder"),
}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def default_tiny_model_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ltx-extend" / "tiny-model"


def resolve_model_dir(model_dir: Path | None) -> Path:
    """The model folder to use: the given one, or the tiny model (written on first use)."""
    if model_dir is not None:
        if not (model_dir / "model_index.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a diffusers model folder "
                                    "(no model_index.json)")
        return model_dir
    tiny = default_tiny_model_dir()
    if not (tiny / "model_index.json").is_file():
        from .tiny import write_tiny_model

        write_tiny_model(tiny)
    return tiny


def load_component(model_dir: Path, name: str, device: torch.device,
                   dtype: torch.dtype | None = None) -> Any:
    """One component, in eval mode and frozen, on `device`."""
    if name == "tokenizer":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir / "tokenizer")
    if name == "scheduler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_pretrained(model_dir / "scheduler")
    module_name, class_name = COMPONENTS[name]
    module = __import__(module_name, fromlist=[class_name])
    model = getattr(module, class_name).from_pretrained(
        model_dir / name, torch_dtype=dtype or compute_dtype(device))
    model.to(device).eval().requires_grad_(False)
    return model
