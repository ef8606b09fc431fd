"""What makes a training step fast and lets it fit: the optimizer, gradient checkpointing
of only as many blocks as the GPU's memory needs, and regional compilation.

- AdamW is fused on CUDA (one kernel for every LoRA tensor). The LoRA weights are fp32,
  their gradients come back fp32 from autocast's casts: already the dtype and device the
  fused kernel takes, so nothing is cast per step.
- Checkpointing trades a block's forward again in the backward for its activations. The
  memory plan (`memory.py`, the step measured on the meta device) gives the fewest
  blocks whose peak fits the GPU; only those are checkpointed, through diffusers' own
  hook for the checkpointing function.
- `torch.compile` of the repeated transformer blocks (diffusers' `compile_repeated_blocks`,
  regional compilation): one block is compiled and its code reused by all 48.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from ..model.device import device_memory_gib

log = logging.getLogger(__name__)
GIB = 2**30


def make_optimizer(params: list[torch.Tensor], lr: float, weight_decay: float,
                   device: torch.device, fused: bool | None = None,
                   low_memory: bool = False) -> torch.optim.Optimizer:
    """AdamW over `params`: in the low-memory mode torchao's 8-bit AdamW where it runs
    (`model.low_memory`); otherwise torch's, fused on CUDA unless `fused` says otherwise."""
    from ..model.low_memory import eight_bit_optimizer_runs_on

    if low_memory and eight_bit_optimizer_runs_on(device):
        from torchao.optim import AdamW8bit

        return AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    if low_memory:
        log.info("low memory: the 8-bit optimizer runs on CUDA only; %s keeps torch's AdamW",
                 device.type)
    fused = device.type == "cuda" if fused is None else fused
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def checkpoint_blocks(transformer: Any, count: int) -> list[int]:
    """Checkpoint the first `count` transformer blocks (0: none); returns their indices.
    The others keep their activations, so they are not run twice."""
    blocks = transformer.transformer_blocks
    if not 0 <= count <= len(blocks):
        raise ValueError(f"cannot checkpoint {count} of {len(blocks)} transformer blocks")
    if count == 0:
        transformer.disable_gradient_checkpointing()
        return []
    chosen = {id(block) for block in blocks[:count]}

    def run(module: torch.nn.Module, *args: Any) -> Any:
        if id(module) in chosen:
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)
        return module(*args)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=run)
    return list(range(count))


@functools.lru_cache(maxsize=16)
def _measured(shapes_json: str, step: Any) -> tuple[Any, int]:
    from ..model.shapes import ModelShapes
    from .measure import measure_step

    return measure_step(ModelShapes.from_json(shapes_json), step)


def spec_step(shapes: Any, spec: Any, text_tokens: int) -> Any:
    """The plan's step shape of `spec` with `text_tokens` of text (the trainer's max
    sequence length)."""
    from .measure import StepShape

    spatial = shapes.configs["transformer"]["vae_scale_factors"][1]
    return StepShape.from_spec(spec, text_tokens=text_tokens, spatial=spatial)


def step_plan(shapes: Any, step: Any, gpu_memory_gib: float, gpu: str = "h100",
              utilisation: float = 0.4) -> Any:
    """The memory plan (`memory.py`) of one step of shape `step` on a GPU of
    `gpu_memory_gib`; measured once per model and step shape in a process."""
    from dataclasses import replace

    from ..model.shapes import build_meta, parameter_count
    from .memory import GPUS, MemoryPlan

    cost, connector_flops = _measured(shapes.to_json(), replace(step, label=""))
    return MemoryPlan(shapes.name, step, shapes.configs["transformer"]["num_layers"],
                      parameter_count(build_meta(shapes, "transformer")),
                      parameter_count(build_meta(shapes, "connectors")), cost, connector_flops,
                      GPUS[gpu], gpu_memory_gib, utilisation)


def planned_checkpointing(shapes: Any, spec: Any, text_tokens: int, device: torch.device,
                          low_memory: bool = False) -> int:
    """Blocks to checkpoint on `device`: on a GPU the plan's fewest that fit its memory
    (all when none fits), elsewhere none (CPU memory is not the limit there)."""
    memory = device_memory_gib(device)
    if memory is None:
        return 0
    plan = step_plan(shapes, spec_step(shapes, spec, text_tokens), memory)
    blocks = plan.blocks_to_checkpoint(low_memory)
    log.info("checkpointing %d of %d blocks: planned peak %.1f GiB of the GPU's %.1f GiB",
             blocks, plan.depth, plan.peak(blocks, low_memory) / GIB, memory)
    return blocks


def compile_blocks(transformer: Any, backend: str = "inductor") -> None:
    """Regional compilation: each repeated transformer block through `torch.compile`
    (compiled at the first step, once for all blocks)."""
    transformer.compile_repeated_blocks(backend=backend)
