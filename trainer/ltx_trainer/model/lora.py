"""The LoRA file: keys under the original LTX-2 names with the `diffusion_model.` prefix
(what ComfyUI's LTX-2 loader and Lightricks' tools read, and what diffusers'
`LTX2Pipeline.lora_state_dict` converts), the training config in its metadata.

Training writes it; `extend` and anyone else read it through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LORA_PREFIX = "diffusion_model."
CONFIG_METADATA_KEY = "ltx_extend_config"


def read_lora_config(path: Path | None) -> dict[str, Any]:
    """The training config stored in a LoRA file's metadata ({} without a file or config)."""
    if path is None:
        return {}
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[CONFIG_METADATA_KEY]) if CONFIG_METADATA_KEY in meta else {}


def load_lora(transformer: Any, path: Path, adapter_name: str = "extend") -> None:
    """Load a LoRA file into a diffusers transformer through diffusers' own conversion."""
    from diffusers import LTX2Pipeline

    state = LTX2Pipeline.lora_state_dict(str(path))
    transformer.load_lora_adapter(state, prefix="transformer", adapter_name=adapter_name)
