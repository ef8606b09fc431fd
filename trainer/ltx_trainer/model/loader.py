"""Loading the LTX-2.3 components from a diffusers-format model folder (where the
folder comes from is `source.py`).

bf16 on GPU, fp32 on CPU. Each stage loads only the parts it needs, so the text
encoder and the VAEs are gone from memory before the first training step.
"""

from __future__ import annotations

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
