"""The device a model runs on and the dtype it computes in there: bf16 on GPU, fp32 on
CPU (where bf16 matmuls are slow and the tests compare against fp32 references)."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def device_memory_gib(device: torch.device) -> float | None:
    """The GPU's memory in GiB (None off a GPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30
