"""The trained LoRA out of the transformer: its state under peft's names (what a
checkpoint keeps), its tensors under the LTX-2 names in bf16 (what its file holds), the
training config that goes in the file's metadata, and the file itself.

Which modules the adapter adapts, and its scale, are `model/adapter.py`'s; the file's key
names and metadata entries are `model/lora.py`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ltx_contract.spec import TrainingSpec

from .. import __version__
from ..model.adapter import check_lora_scale, lora_alpha
from ..model.lora import CONFIG_METADATA_KEY, LORA_PREFIX, VERSION_KEY, lora_key

TRAINING_TYPE = "extend-suffix"


def adapter_state(transformer: Any) -> dict[str, torch.Tensor]:
    """The adapter's weights under peft's names, detached copies on the CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone()
            for k, v in get_peft_model_state_dict(transformer).items()}


def lora_state_dict(transformer: Any) -> dict[str, torch.Tensor]:
    """The LoRA weights in bf16 under their original LTX-2 names (`diffusion_model.`), at
    the scale other tools apply (`adapter.check_lora_scale`)."""
    from peft import get_peft_model_state_dict

    check_lora_scale(transformer)
    return file_tensors(get_peft_model_state_dict(transformer))


def file_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoRA state under peft's names as its file holds it: bf16 on the CPU, under the
    LTX-2 names."""
    return {lora_key(k): v.detach().to(torch.bfloat16).contiguous().cpu()
            for k, v in state.items()}


def training_config(spec: TrainingSpec, model_name: str, *, version: str,
                    max_sequence_length: int, seed: int) -> dict[str, Any]:
    """What inference needs to match the training (`version`: the profile's, "2.5")."""
    width, height = spec.frame_size
    return {
        "trainingType": TRAINING_TYPE,
        "triggerPhrase": spec.trigger_phrase,
        "conditioningFrames": spec.conditioning_frames,
        "suffixLatentFrames": spec.suffix_latent_frames,
        "numberOfFrames": spec.number_of_frames,
        "frameRate": spec.frame_rate,
        "resolution": spec.resolution,
        "aspectRatio": spec.aspect_ratio,
        "width": width,
        "height": height,
        "withAudio": spec.with_audio,
        "rank": spec.rank,
        "alpha": lora_alpha(spec.rank),
        "steps": spec.number_of_steps,
        "learningRate": spec.learning_rate,
        "loraKeyPrefix": LORA_PREFIX,
        "baseModel": model_name,
        VERSION_KEY: version,  # "2.5" (as files have always recorded it); read by lora_version
        "maxSequenceLength": max_sequence_length,
        "seed": seed,
        "trainer": f"ltx-extend {__version__}",
    }


def write_lora_file(transformer: Any, config: dict[str, Any], dest: Path,
                    weights: dict[str, Any] | None = None) -> Path:
    """`lora.safetensors` with flat metadata entries (for tools that list them) and the
    whole config as one JSON entry; `weights`: the file's tensors (`file_tensors`, where
    the transformer cannot give them itself: its base sharded), else its LoRA."""
    metadata = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in config.items()}
    metadata[CONFIG_METADATA_KEY] = json.dumps(config)
    check_lora_scale(transformer)
    save_file(lora_state_dict(transformer) if weights is None else weights, dest,
              metadata=metadata)
    return dest
