"""Where the trained transformer lives across the ranks: whole on each (`Replicated`) or
its frozen base sharded over the node's GPUs (`Sharded`, `sharding.py`).

The training loop asks one placement object for what differs between the two — how many
blocks to checkpoint, how to wrap the model, how to average and clip the LoRA gradients,
how to take the LoRA and optimizer state out for a checkpoint or the LoRA file and put
them back in on a resume — and never which one it runs under. `placement` chooses it
once, when the trainer is made.

Both write the same state: the whole LoRA under peft's names and the optimizer's state of
whole tensors, so a checkpoint of either resumes under either, at any number of ranks.
"""

from __future__ import annotations

from typing import Any

import torch

from . import distributed
from .checkpoints import optimizer_state_keyed
from .distributed import World
from .lora import adapter_state, file_tensors, lora_state_dict
from .sharding import (
    clip_gradients,
    full_lora_state,
    full_optimizer_state,
    load_lora_state,
    load_optimizer_state,
    node_ranks,
    shard_frozen_base,
)
from .sharding import planned_checkpointing as planned_sharded
from .speed import device_memory_gib, planned_checkpointing

#: the LoRA under peft's names (the checkpoint's) and under the file's names
LoraState = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


class Placement:
    """What the two placements share: the gradient scaling and clipping around their own
    reduction, and the names the optimizer's state is keyed by."""

    #: a resumed optimizer state is keyed by the parameters' names (else by position)
    by_name = False

    def __init__(self, world: World):
        self.world = world

    def checkpointed_blocks(self, shapes: Any, spec: Any, text_tokens: int,
                            device: torch.device, low_memory: bool) -> int:
        """The blocks to checkpoint when the settings do not say: the fewest whose planned
        peak fits the GPU's memory."""
        raise NotImplementedError

    def wrap(self, transformer: torch.nn.Module, device: torch.device) -> None:
        """Called after checkpointing wraps the blocks and before the optimizer is made."""

    def reduce_and_clip(self, params: list[torch.Tensor], samples: int, max_norm: float
                        ) -> torch.Tensor:
        """Average the gradients of `params` (summed over this rank's `samples`) over the
        global batch, clip them, and return their total norm before clipping (a plain
        tensor on the device)."""
        scale = 1 / self._reduce(params, samples)
        if scale != 1:
            for param in params:
                param.grad.mul_(scale)
        return clip_gradients(params, max_norm)

    def _reduce(self, params: list[torch.Tensor], samples: int) -> int:
        """Whatever reduction the gradients still need; the number of samples they are
        then summed over."""
        raise NotImplementedError

    def lora_state(self, transformer: torch.nn.Module) -> LoraState:
        """The whole LoRA, on every rank (a collective where it is sharded)."""
        raise NotImplementedError

    def lora_file(self, transformer: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The LoRA file's tensors on the main rank (None elsewhere); every rank calls it."""
        raise NotImplementedError

    def optimizer_state(self, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer
                        ) -> dict[str, Any]:
        """The optimizer's state to checkpoint; every rank calls it."""
        raise NotImplementedError

    def load(self, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer,
             lora: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
        """Put a checkpoint's whole LoRA and optimizer state (of either placement, at any
        number of ranks) into this rank's model and optimizer."""
        state = optimizer_state_keyed(optimizer_state, trained_names(transformer), self.by_name)
        self._load(transformer, optimizer, lora, state)

    def _load(self, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer,
              lora: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
        raise NotImplementedError


class Replicated(Placement):
    """The whole transformer on each rank; the LoRA gradients summed over the ranks in one
    all-reduce (`distributed.sum_gradients`)."""

    def checkpointed_blocks(self, shapes: Any, spec: Any, text_tokens: int,
                            device: torch.device, low_memory: bool) -> int:
        return planned_checkpointing(shapes, spec, text_tokens, device, low_memory)

    def _reduce(self, params: list[torch.Tensor], samples: int) -> int:
        distributed.sum_gradients(self.world, params)
        return self.world.size * samples

    def lora_state(self, transformer: torch.nn.Module) -> LoraState:
        return adapter_state(transformer), lora_state_dict(transformer)

    def lora_file(self, transformer: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        return lora_state_dict(transformer) if self.world.is_main else None

    def optimizer_state(self, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer
                        ) -> dict[str, Any]:
        return optimizer.state_dict()

    def _load(self, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer,
              lora: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(transformer, lora)
        optimizer.load_state_dict(optimizer_state)


class Sharded(Placement):
    """The frozen base sharded over the node's ranks with FSDP2 (`sharding.py`), which
    also averages the LoRA gradients over every rank; states go out and in whole, each a
    collective."""

    by_name = True  # whole tensors by name: resumable at any world size

    def checkpointed_blocks(self, shapes: Any, spec: Any, text_tokens: int,
                            device: torch.device, low_memory: bool) -> int:
        return planned_sharded(shapes, spec, text_tokens, device_memory_gib(device),
                               node_ranks())

    def wrap(self, transformer: torch.nn.Module, device: torch.device) -> None:
        shard_frozen_base(transformer, device)

    def _reduce(self, params: list[torch.Tensor], samples: int) -> int:
        return samples  # FSDP averaged the sums over the ranks in the backward

    def lora_state(self, transformer: torch.nn.Module) -> LoraState:
        state = full_lora_state(transformer)
        return state, file_tensors(state)

    def lora_file(self, transformer: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        return self.lora_state(transformer)[1]

    def optimizer_state(self, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer
                        ) -> dict[str, Any]:
        return full_optimizer_state(transformer, optimizer)

    def _load(self, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer,
              lora: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
        load_lora_state(transformer, lora)
        load_optimizer_state(transformer, optimizer, optimizer_state)


def placement(shard_base: bool, world: World) -> Placement:
    """The placement a run's settings ask for (`--shard-base`: sharded within each node,
    replicated across nodes)."""
    return Sharded(world) if shard_base else Replicated(world)


def trained_names(transformer: torch.nn.Module) -> list[str]:
    """The trained parameters' names, in the optimizer's order (as torch's distributed
    state dicts name them: without the compiled blocks' wrapper)."""
    return [name.replace("_orig_mod.", "") for name, p in transformer.named_parameters()
            if p.requires_grad]
