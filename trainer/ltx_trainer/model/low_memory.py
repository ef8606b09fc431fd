"""The low-memory training mode (`--low-memory`): the frozen base weights of the
transformer's blocks in int8 and AdamW's moments in 8 bits, so that the 22B model trains
on a 48 GB card.

- **int8 weight-only base weights** (torchao's `Int8WeightOnlyConfig`, one scale per
  output channel): every frozen linear layer inside the transformer's blocks — 97.7 % of
  its weights — is stored in int8 and dequantized to the activations' dtype in each
  matmul. The LoRA's own layers stay fp32 and train as before; the layers outside the
  blocks (patchify, timestep embeddings, the output projection) stay bf16, being small
  and the most sensitive to rounding.
- **8-bit AdamW** (torchao's `AdamW8bit`: both moments in 8 bits with a scale per
  block of 256 values) where its kernels run well: on CUDA. Its step is a
  `torch.compile`d kernel per parameter shape; on the CPU that compiles C++ for about a
  minute per shape before the first step, so a CPU run keeps torch's AdamW (fp32
  moments) and quantizes the weights only.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

BF16 = 2
#: a LoRA parameter under the 8-bit optimizer: fp32 weight and gradient, two 8-bit
#: moments and their fp32 scales (one per block of AdamW8bit's 256 values)
LORA_BYTES_PER_PARAM_8BIT = 4 + 4 + 2 * (1 + 4 / 256)
#: what stays in bf16: LoRA layers (trained) and everything outside the blocks
BLOCKS = "transformer_blocks."


def _is_frozen_block_linear(module: torch.nn.Module, name: str) -> bool:
    return isinstance(module, torch.nn.Linear) and BLOCKS in f"{name}." and "lora_" not in name


def quantizable(module: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The linear layers `quantize_frozen` stores in int8 (name → layer); works on the
    meta device, so the plan counts them without memory."""
    return {name: m for name, m in module.named_modules() if _is_frozen_block_linear(m, name)}


def int8_bytes(module: torch.nn.Module) -> tuple[int, int]:
    """(bytes of the quantizable weights in bf16, their bytes in int8 with their scales)."""
    layers = quantizable(module).values()
    bf16 = sum(m.weight.numel() * BF16 for m in layers)
    int8 = sum(m.weight.numel() + m.out_features * BF16 for m in layers)
    return bf16, int8


def quantize_frozen(transformer: torch.nn.Module) -> int:
    """Store the frozen linear weights of the blocks in int8, in place (with or without
    the LoRA added: its layers are trainable and left as they are); returns how many
    layers were quantized."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    count = len(quantizable(transformer))
    quantize_(transformer, Int8WeightOnlyConfig(set_inductor_config=False),
              filter_fn=_is_frozen_block_linear)
    log.info("low memory: %d frozen linear layers stored in int8", count)
    return count


def eight_bit_optimizer_runs_on(device: torch.device) -> bool:
    """Whether the 8-bit AdamW is used on `device` (see the module's note)."""
    return device.type == "cuda"
