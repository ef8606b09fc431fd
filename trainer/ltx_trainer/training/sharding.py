"""Sharding the frozen base over the GPUs of a node with FSDP2 (`--shard-base`).

Each rank keeps 1/G of every transformer weight (G: the ranks of its node) and gathers a
block's weights only while that block runs, so two 48 GB cards hold what one 80 GB card
does (`memory.py` has the figures). torch's own `fully_shard` does it, applied to
each transformer block (the unit that is gathered, run and freed) and then to the root
for the weights outside the blocks. With several nodes the mesh is two-dimensional:
shard within a node, where the links are fast, and replicate across nodes (HSDP), so the
per-step all-gathers never leave the node.

The LoRA weights become sharded DTensors too: FSDP reduce-scatters their gradients and
averages them over every rank, so no DDP wrapper is needed and the optimizer steps the
local shards. Mixed precision: each block computes in the base's dtype (bf16 on a GPU:
the LoRA weights are cast to it as autocast casts them unsharded); the LoRA master
weights stay fp32 and gradients are reduced in fp32.

Composes with gradient checkpointing (`speed.checkpoint_blocks`): a checkpointed block's
forward runs again in the backward while FSDP holds its weights gathered for that
backward. The low-memory mode's int8 weights do not: torchao's int8 tensors have no
FSDP2 all-gather extension, so the two are refused together (`check_combination`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from ltx_contract.outcomes import InvalidInput

log = logging.getLogger(__name__)

#: the mesh's dimensions: ranks of a node (shard) and nodes (replicate)
SHARD, REPLICATE = "shard", "replicate"


def check_combination(shard_base: bool, low_memory: bool) -> None:
    """Refuse sharding with the low-memory mode (see the module's note)."""
    if shard_base and low_memory:
        raise InvalidInput(
            "sharding the frozen base (--shard-base, LTX_EXTEND_SHARD_BASE=1) cannot be "
            "combined with the low-memory mode (--low-memory): FSDP2 cannot shard its int8 "
            "weights. Choose one: sharding over 2 GPUs already holds the bf16 base on 48 GB "
            "cards, the low-memory mode does it on one GPU")


def node_mesh(device: torch.device) -> Any:
    """The DeviceMesh of the process group: the ranks of each node along `shard`, and,
    with several nodes, the nodes along `replicate` (torchrun numbers a node's ranks
    consecutively, so a row of the mesh is one node)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        raise RuntimeError("sharding the frozen base needs the ranks' process group: start "
                           "the run through the launcher (`job train` or --processes N)")
    world = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if local < 1 or world % local:
        raise RuntimeError(f"{world} ranks cannot be split into nodes of {local} "
                           "(LOCAL_WORLD_SIZE)")
    if local == world:
        return init_device_mesh(device.type, (world,), mesh_dim_names=(SHARD,))
    return init_device_mesh(device.type, (world // local, local),
                            mesh_dim_names=(REPLICATE, SHARD))


def shard_frozen_base(transformer: torch.nn.Module, device: torch.device) -> None:
    """Shard `transformer` (its LoRA already added, its weights on `device`) in place over
    the ranks of this node: each block, then the root. Every rank calls it; afterwards
    every parameter is a DTensor and the optimizer is made over them."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if any(type(p.data) is not torch.Tensor for p in transformer.parameters()):
        raise InvalidInput("the frozen base cannot be sharded: some of its weights are "
                           "quantized (the low-memory mode's int8); train without "
                           "--low-memory to shard it")
    mesh = node_mesh(device)
    # inputs are left as the caller gives them: cast to bf16, the timesteps (~1000 × sigma)
    # and the RoPE coordinates would lose their precision
    policy = MixedPrecisionPolicy(param_dtype=_base_dtype(transformer),
                                  reduce_dtype=torch.float32, cast_forward_inputs=False)
    blocks = transformer.transformer_blocks
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # the root's own weights (patchify, embeddings, output projection) are used at both
    # ends of the forward: kept gathered until the backward has passed them
    fully_shard(transformer, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    frozen = [p for p in transformer.parameters() if not p.requires_grad]
    log.info("frozen base sharded over %s: %d blocks and the root, %s compute; this rank "
             "holds %.3g of its %.3g weights", _describe(mesh), len(blocks),
             policy.param_dtype, local_numel(frozen), sum(p.numel() for p in frozen))


def _base_dtype(transformer: torch.nn.Module) -> torch.dtype:
    """The dtype of the frozen weights, which every block computes in."""
    frozen = {p.dtype for p in transformer.parameters()
              if not p.requires_grad and p.is_floating_point()}
    if len(frozen) != 1:
        raise RuntimeError(f"the frozen weights must share one dtype to be sharded, not {frozen}")
    return frozen.pop()


def _describe(mesh: Any) -> str:
    shape = dict(zip(mesh.mesh_dim_names, mesh.mesh.shape, strict=True))
    if REPLICATE in shape:
        return f"{shape[SHARD]} ranks per node, replicated over {shape[REPLICATE]} nodes"
    return f"{shape[SHARD]} ranks"


def node_ranks() -> int:
    """The ranks of this node (torchrun's LOCAL_WORLD_SIZE; 1 outside a launched run)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def planned_checkpointing(shapes: Any, spec: Any, text_tokens: int, memory_gib: float | None,
                          gpus: int) -> int:
    """Blocks to checkpoint with the base sharded over `gpus` GPUs of `memory_gib` GiB
    each: the plan's fewest whose sharded peak fits (all when none does); none off a GPU
    (`memory_gib` None), as unsharded."""
    from .memory import shard_plan
    from .speed import spec_step, step_plan

    if memory_gib is None:
        return 0
    plan = shard_plan(step_plan(shapes, spec_step(shapes, spec, text_tokens), memory_gib),
                      shapes, gpus)
    blocks = plan.blocks_to_checkpoint()
    log.info("checkpointing %d of %d blocks: planned peak %.1f GiB per GPU of %.1f GiB, the "
             "base sharded over %d", blocks, plan.plan.depth, plan.peak(blocks) / 2**30,
             memory_gib, gpus)
    return blocks


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_lora_state(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights under peft's names, as whole tensors on the CPU (what
    `lora.adapter_state` gives an unsharded model). Collective: every rank calls it, in
    the same order, and every rank gets the state; rank 0 writes it."""
    from peft import get_peft_model_state_dict

    return {name: _full(value.detach()).cpu().clone()
            for name, value in get_peft_model_state_dict(transformer).items()}


def load_lora_state(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole LoRA state (peft's names, from a run at any number of ranks) into the
    model, sharded or not: each rank keeps its own part."""
    from peft import get_peft_model_state_dict
    from torch.distributed.tensor import DTensor, distribute_tensor

    targets = get_peft_model_state_dict(transformer)  # views of the parameters
    missing, unexpected = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
    if missing or unexpected:
        raise ValueError(f"the LoRA state does not fit the model's adapter: {len(missing)} "
                         f"weights missing {missing[:2]}, {len(unexpected)} unexpected "
                         f"{unexpected[:2]} (a checkpoint of another rank or model?)")
    with torch.no_grad():
        for name, target in targets.items():
            value = state[name]
            if value.shape != target.shape:
                raise ValueError(f"LoRA weight {name} is {tuple(value.shape)} in the state, "
                                 f"{tuple(target.shape)} in the model")
            value = value.to(target.device, target.dtype)
            if isinstance(target, DTensor):  # every rank holds the whole state: no traffic
                value = distribute_tensor(value, target.device_mesh, target.placements,
                                          src_data_rank=None)
            target.copy_(value)


def full_optimizer_state(transformer: torch.nn.Module, optimizer: torch.optim.Optimizer
                         ) -> dict[str, Any]:
    """The optimizer's state as whole tensors on the CPU, keyed by the parameters' names
    (torch's distributed `get_optimizer_state_dict`), the same at any number of ranks,
    sharded or not. Collective, as `full_lora_state`."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )
    from torch.utils._pytree import tree_map

    state = get_optimizer_state_dict(transformer, optimizer,
                                     options=StateDictOptions(full_state_dict=True))
    return tree_map(lambda v: v.cpu().clone() if isinstance(v, torch.Tensor) else v, state)


def load_optimizer_state(transformer: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """Load a state `full_optimizer_state` gave (at any number of ranks) into the
    optimizer of this rank's parameters. The optimizer keeps copies: torch would keep
    views of `state`'s tensors as its moments and update them in place."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )
    from torch.utils._pytree import tree_map

    state = tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, state)
    set_optimizer_state_dict(transformer, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` over sharded or whole parameters; the total norm before
    clipping as a plain tensor on the device (sharded, torch returns it as a DTensor)."""
    return _full(torch.nn.utils.clip_grad_norm_(params, max_norm))


def local_numel(params: Any) -> int:
    """Elements this rank holds of `params` (its shards of sharded ones)."""
    from torch.distributed.tensor import DTensor

    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
