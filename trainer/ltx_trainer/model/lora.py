"""The LoRA file: keys under the original LTX-2 names with the `diffusion_model.` prefix
(what ComfyUI's LTX-2 loader and Lightricks' tools read, and what diffusers'
`LTX2Pipeline.lora_state_dict` converts), the training config in its metadata.

Training writes it; `extend` and anyone else read it through here. A LoRA works only with
the base model it was trained on, so its file names that model's version
(`baseModelVersion`, e.g. "2.5") and loading it into another version is refused. Files
written before the version was recorded were all trained on LTX-2.3 and are read as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LORA_PREFIX = "diffusion_model."
CONFIG_METADATA_KEY = "ltx_extend_config"
#: the config and metadata entry naming the base model version
VERSION_KEY = "baseModelVersion"
#: the version of a LoRA file without one (every such file was trained on LTX-2.3)
UNRECORDED_VERSION = "ltx-2.3"


def lora_key(name: str) -> str:
    """A LoRA tensor's key in the file from its peft name
    (`transformer_blocks.0.attn1.to_q.lora_A.weight`): the transformer's original name,
    through the single file's rename table, under `LORA_PREFIX`."""
    from .single_file import transformer_key

    return LORA_PREFIX + transformer_key(name)


def read_lora_config(path: Path | None) -> dict[str, Any]:
    """The training config stored in a LoRA file's metadata ({} without a file or config)."""
    if path is None:
        return {}
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[CONFIG_METADATA_KEY]) if CONFIG_METADATA_KEY in meta else {}


def lora_version(path: Path) -> str:
    """The base model version a LoRA file was trained on ("ltx-2.3", "ltx-2.5"): its
    metadata entry, else its config's, else LTX-2.3 (files from before it was recorded)."""
    from safetensors import safe_open

    from .release import version_name

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    config = json.loads(meta[CONFIG_METADATA_KEY]) if CONFIG_METADATA_KEY in meta else {}
    version = str(meta.get(VERSION_KEY) or config.get(VERSION_KEY) or UNRECORDED_VERSION)
    return version if version.startswith("ltx-") else version_name(version.strip('"'))


def check_lora_version(path: Path, model_version: str) -> None:
    """Refuse a LoRA trained on another base model version than `model_version`
    ("ltx-2.5"), naming both (`InvalidInput`)."""
    from ltx_contract.outcomes import InvalidInput

    trained_on = lora_version(path)
    if trained_on != model_version:
        unrecorded = " (it records no version: files without one are LTX-2.3's)" if (
            trained_on == UNRECORDED_VERSION and not _records_version(path)) else ""
        raise InvalidInput(
            f"the LoRA {path} was trained on {trained_on}{unrecorded}, but the base model is "
            f"{model_version}: a LoRA works only with the model version it was trained on")


def _records_version(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    return VERSION_KEY in meta or VERSION_KEY in meta.get(CONFIG_METADATA_KEY, "")


def load_lora(transformer: Any, path: Path, adapter_name: str = "extend",
              model_version: str | None = None) -> None:
    """Load a LoRA file into a diffusers transformer through diffusers' own conversion,
    after checking it was trained on `model_version` (the profile's `name`) where given."""
    from diffusers import LTX2Pipeline

    if model_version is not None:
        check_lora_version(path, model_version)

    state = LTX2Pipeline.lora_state_dict(str(path))
    transformer.load_lora_adapter(state, prefix="transformer", adapter_name=adapter_name)
