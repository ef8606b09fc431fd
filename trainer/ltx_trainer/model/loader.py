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


def download_model(url: str, dest: Path) -> Path:
    """Copy a model folder from the artifact store (s3:// or file:// prefix) to `dest`,
    once: a folder already holding its model_index.json is used as it is."""
    from ..store import open_store

    if (dest / "model_index.json").is_file():
        return dest
    store = open_store(url)
    partial = dest.with_name(dest.name + ".partial")
    keys = store.keys("")
    for key in keys:
        store.get_file(key, partial / key)
    if not (partial / "model_index.json").is_file():
        raise FileNotFoundError(f"{url} holds no diffusers model folder (no model_index.json)")
    partial.rename(dest)
    return dest


def resolve_model_dir(model_dir: Path | str | None) -> Path:
    """The model folder to use: a local folder, a store URL (downloaded to the cache), or
    the tiny model (written on first use)."""
    if isinstance(model_dir, str) and model_dir.startswith(("s3://", "file://")):
        import hashlib

        key = hashlib.sha1(model_dir.encode()).hexdigest()[:16]
        return download_model(model_dir, default_tiny_model_dir().parent / "models" / key)
    if model_dir is not None:
        model_dir = Path(model_dir)
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
