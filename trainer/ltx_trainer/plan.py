"""A computed plan of one training step: memory and time on a GPU, from the model's real
shapes and the spec's token counts.

Nothing is estimated by hand. The transformer (with the trainer's LoRA) and the text
connectors are built on the meta device and run once, forward and backward, on inputs
of the spec's sizes, with each op as the CUDA step runs it (attention through the fused
kernels, matmuls in bf16 as under autocast):

- activations are the bytes of the tensors autograd keeps for the backward
  (`saved_tensors_hooks`), each storage once; with gradient checkpointing a block keeps
  only its inputs, and one block's activations are rebuilt at a time;
- FLOPs are torch's `FlopCounterMode` count of that forward and backward (plus the
  recomputed forwards of checkpointed blocks, and the connectors' no-grad forward).

The blocks of a stack are identical, so the step is measured at depths 1 and 2 and
carried to the model's depth exactly (every figure is a + depth · b).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 2**30
BF16 = 2
#: fp32 LoRA weight + its gradient + AdamW's two moments
LORA_BYTES_PER_PARAM = 4 + 4 + 8
#: GiB of a GPU left to what is not measured here: the CUDA context, the allocator's
#: fragmentation and the backward's transient gradients
RESERVE_GIB = 2.0


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_flops: float  # dense bf16 peak, FLOP/s
    memory_gib: int


GPUS = {
    "h100": Gpu("NVIDIA H100 SXM", 989e12, 80),
    "h200": Gpu("NVIDIA H200", 989e12, 141),
    "a100": Gpu("NVIDIA A100", 312e12, 80),
    "l40s": Gpu("NVIDIA L40S", 362e12, 48),
}


@dataclass(frozen=True)
class StepShape:
    """The token counts of one training step (batch of one)."""

    label: str
    latent_frames: int
    latent_height: int
    latent_width: int
    audio_frames: int
    text_tokens: int
    frame_rate: float
    with_audio: bool
    rank: int

    @property
    def video_tokens(self) -> int:
        return self.latent_frames * self.latent_height * self.latent_width

    @classmethod
    def from_spec(cls, spec: Any, text_tokens: int | None = None, spatial: int = 32
                  ) -> StepShape:
        from ltx_contract.suffix import audio_latent_frames, latent_frames

        from .codec.text import DEFAULT_TEXT_TOKENS

        width, height = spec.frame_size
        label = f"{spec.resolution} {width}×{height}, {spec.number_of_frames} frames" + (
            ", audio" if spec.with_audio else "")
        return cls(label, latent_frames(spec.number_of_frames), height // spatial,
                   width // spatial, audio_latent_frames(spec.number_of_frames, spec.frame_rate),
                   text_tokens or DEFAULT_TEXT_TOKENS, float(spec.frame_rate),
                   spec.with_audio, spec.rank)


@dataclass(frozen=True)
class StepCost:
    """What one step costs at one depth, as measured on the meta device."""

    forward_flops: int
    backward_flops: int
    saved_outside: int  # bytes autograd keeps outside the blocks
    saved_per_block: int  # … inside one block
    shared_inputs: int  # bytes of the inputs every block takes (text, modulation, RoPE)
    inputs_per_block: int  # … of the inputs one block alone takes (its hidden states)
    block_forward_flops: int
    lora_per_block: int


@dataclass(frozen=True)
class Plan:
    model: str
    step: StepShape
    depth: int
    transformer_params: int
    connector_params: int
    cost: StepCost
    connector_flops: int
    gpu: Gpu
    gpu_memory_gib: float
    utilisation: float
    #: bytes the low-memory mode saves by storing the blocks' frozen linear weights in int8
    int8_saving: int = 0

    @property
    def frozen_bytes(self) -> int:
        """The transformer and the connectors in bf16 (the text encoder and the VAEs are
        gone before the first step: the features are cached)."""
        return (self.transformer_params + self.connector_params) * BF16

    def frozen(self, low_memory: bool = False) -> int:
        """The frozen weights, in the low-memory mode with the blocks' linear weights in
        int8 (`model/low_memory.py`)."""
        return self.frozen_bytes - (self.int8_saving if low_memory else 0)

    def lora_state(self, low_memory: bool = False) -> int:
        """LoRA weights, gradients and AdamW's moments (8-bit ones in the low-memory mode)."""
        from .model.low_memory import LORA_BYTES_PER_PARAM_8BIT

        return round(self.lora_params * LORA_BYTES_PER_PARAM_8BIT) if low_memory \
            else self.lora_bytes

    @property
    def lora_params(self) -> int:
        return self.cost.lora_per_block * self.depth

    @property
    def lora_bytes(self) -> int:
        return self.lora_params * LORA_BYTES_PER_PARAM

    def activations(self, checkpointed: int) -> int:
        """Bytes kept for the backward with `checkpointed` of the blocks checkpointed."""
        c = self.cost
        kept = c.saved_outside + (self.depth - checkpointed) * c.saved_per_block
        if checkpointed:  # their inputs, and one block rebuilt at a time in the backward
            kept += c.shared_inputs + checkpointed * c.inputs_per_block + c.saved_per_block
        return kept

    def peak(self, checkpointed: int, low_memory: bool = False) -> int:
        return (self.frozen(low_memory) + self.lora_state(low_memory)
                + self.activations(checkpointed))

    @property
    def checkpointed_blocks(self) -> int | None:
        """The fewest checkpointed blocks whose peak fits the GPU's memory less
        `RESERVE_GIB` (None: it does not fit even with every block checkpointed)."""
        return self.fewest_checkpointed(low_memory=False)

    def fewest_checkpointed(self, low_memory: bool) -> int | None:
        budget = (self.gpu_memory_gib - RESERVE_GIB) * GIB
        return next((k for k in range(self.depth + 1) if self.peak(k, low_memory) <= budget),
                    None)

    @property
    def planned_blocks(self) -> int:
        """Blocks to checkpoint: the fewest that fit, else all."""
        return self.blocks_to_checkpoint(low_memory=False)

    def blocks_to_checkpoint(self, low_memory: bool) -> int:
        """The fewest checkpointed blocks that fit in that mode, else all."""
        k = self.fewest_checkpointed(low_memory)
        return self.depth if k is None else k

    def flops(self, checkpointed: int) -> int:
        """One step's FLOPs; the frozen connectors are not in it (the trainer runs them
        once per caption and keeps their outputs, `connector_flops` apart)."""
        c = self.cost
        return c.forward_flops + c.backward_flops + checkpointed * c.block_forward_flops

    def seconds(self, checkpointed: int) -> float:
        return self.flops(checkpointed) / (self.utilisation * self.gpu.bf16_flops)

    def summary(self) -> dict[str, Any]:
        """Every figure, for machines (`ltx-extend plan --json`)."""
        k, depth = self.planned_blocks, self.depth
        return {
            "model": self.model, "case": self.step.label, "videoTokens": self.step.video_tokens,
            "audioTokens": self.step.audio_frames, "textTokens": self.step.text_tokens,
            "rank": self.step.rank, "depth": depth, "transformerParams": self.transformer_params,
            "connectorParams": self.connector_params, "frozenGiB": self.frozen_bytes / GIB,
            "loraParams": self.lora_params, "loraStateGiB": self.lora_bytes / GIB,
            "activationsGiB": self.activations(0) / GIB,
            "activationsCheckpointedGiB": self.activations(depth) / GIB,
            "peakGiB": self.peak(0) / GIB, "peakCheckpointedGiB": self.peak(depth) / GIB,
            "gpu": self.gpu.name, "gpuMemoryGiB": self.gpu_memory_gib,
            "reserveGiB": RESERVE_GIB, "fits": self.checkpointed_blocks is not None,
            "checkpointedBlocks": k, "plannedPeakGiB": self.peak(k) / GIB,
            "flopsNoCheckpointing": self.flops(0), "flopsCheckpointed": self.flops(depth),
            "flopsPlanned": self.flops(k), "connectorFlops": self.connector_flops,
            "utilisation": self.utilisation, "secondsCheckpointed": self.seconds(depth),
            "secondsPlanned": self.seconds(k),
            "lowMemory": {
                "frozenGiB": self.frozen(True) / GIB, "loraStateGiB": self.lora_state(True) / GIB,
                "peakCheckpointedGiB": self.peak(depth, True) / GIB,
                "checkpointedBlocks": self.fewest_checkpointed(True),
            },
        }


# -- measuring on the meta device -------------------------------------------------------

def _storage(tensor: Any) -> int:
    """One key per storage, so a tensor saved by several ops (or its views) counts once."""
    return tensor.untyped_storage()._cdata


def _nbytes(tensor: Any) -> int:
    return tensor.untyped_storage().nbytes()


def _as_on_gpu() -> Any:
    """A torch-function mode that runs each op as the CUDA training step does: attention
    through the fused kernels (flash without a mask, memory-efficient with one), which
    keep q, k, v, the output and the log-sum-exp for the backward rather than the
    attention matrix; matmuls in bf16, as under autocast."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map

    def fused(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: float | None = None, **_: Any) -> Any:
        aten = torch.ops.aten
        if attn_mask is None:
            return aten._scaled_dot_product_flash_attention(
                query, key, value, dropout_p, is_causal, False, scale=scale)[0]
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device
                                    ).masked_fill(~attn_mask, float("-inf"))
        bias = attn_mask.to(query.dtype).expand(*query.shape[:3], key.shape[2])
        return aten._scaled_dot_product_efficient_attention(
            query, key, value, bias, True, dropout_p, is_causal, scale=scale)[0]

    matmuls = {F.linear, torch.matmul, torch.bmm, torch.baddbmm, torch.addmm,
               torch.Tensor.matmul, torch.Tensor.__matmul__}

    def bf16(value: Any) -> Any:
        is_fp32 = isinstance(value, torch.Tensor) and value.dtype == torch.float32
        return value.to(torch.bfloat16) if is_fp32 else value

    class AsOnGpu(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                return fused(*args, **kwargs)
            if func in matmuls:
                args, kwargs = tree_map(bf16, args), tree_map(bf16, kwargs)
            return func(*args, **kwargs)

    return AsOnGpu()


def _with_depth(shapes: Any, depth: int) -> Any:
    from .model.shapes import ModelShapes

    configs = {name: shapes.config(name) for name in ("transformer", "connectors")}
    configs["transformer"]["num_layers"] = depth
    return ModelShapes(f"{shapes.name}@{depth}", configs)


_TEXT_FEATURES: dict[tuple[str, int], tuple[Any, Any, Any, int]] = {}


def _text_features(shapes: Any, step: StepShape) -> tuple[Any, Any, Any, int]:
    """The connectors' outputs for the step's text (meta tensors) and their FLOPs; the
    same for every step of a model and text length."""
    key = (shapes.to_json(), step.text_tokens)
    if key not in _TEXT_FEATURES:
        _TEXT_FEATURES[key] = _run_connectors(shapes, step.text_tokens)
    return _TEXT_FEATURES[key]


def _run_connectors(shapes: Any, text_tokens: int) -> tuple[Any, Any, Any, int]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .model.shapes import build_meta

    connectors = build_meta(shapes, "connectors")
    config = connectors.config
    meta = torch.device("meta")
    text = torch.empty(1, text_tokens, config.caption_channels * config.text_proj_in_factor,
                       device=meta, dtype=torch.bfloat16)
    mask = torch.ones(1, text_tokens, device=meta, dtype=torch.long)
    with torch.no_grad(), _as_on_gpu(), FlopCounterMode(display=False) as counter:
        video, audio, text_mask = connectors(text, mask, padding_side="left")
    return video, audio, text_mask, counter.get_total_flops()


def _measure(shapes: Any, step: StepShape, text: tuple[Any, Any, Any]) -> dict[str, Any]:
    """One forward and backward of the transformer at `shapes`' depth."""
    import torch
    from torch.utils._pytree import tree_leaves
    from torch.utils.flop_counter import FlopCounterMode

    from .model.adapter import add_lora, trained_modalities
    from .model.shapes import build_meta

    meta = torch.device("meta")
    transformer = build_meta(shapes, "transformer")
    with meta:  # the adapter's layers too
        add_lora(transformer, step.rank, trained_modalities(step.with_audio))
    for param in transformer.parameters():
        if param.requires_grad:  # as the trainer keeps them
            param.data = param.data.float()
    config = transformer.config
    frozen = {_storage(p) for p in transformer.parameters()}
    # Every tensor seen is kept until the end, so that no storage is freed and its
    # address reused under another tensor's key (meta tensors cost nothing to keep).
    saved: dict[int, tuple[Any, Any]] = {}  # storage → (tensor, block index or None)
    inputs: dict[int, dict[int, Any]] = {}  # block → {storage: tensor}
    where: list[Any] = [None]

    def entered(index: int, args: Any, kwargs: Any) -> None:
        where[0] = index
        leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        inputs[index] = {_storage(t): t for t in leaves if _storage(t) not in frozen}

    for index, block in enumerate(transformer.transformer_blocks):
        block.register_forward_pre_hook(
            lambda _m, args, kwargs, i=index: entered(i, args, kwargs), with_kwargs=True)
        block.register_forward_hook(lambda *_: where.__setitem__(0, None))

    def pack(tensor: Any) -> Any:
        key = _storage(tensor)
        if key not in frozen and key not in saved:
            saved[key] = (tensor, where[0])
        return tensor

    frames, height, width = step.latent_frames, step.latent_height, step.latent_width
    tokens, audio = step.video_tokens, step.audio_frames
    video_text, audio_text, text_mask = text

    def latents(count: int, channels: int) -> Any:
        return torch.empty(1, count, channels, device=meta, dtype=torch.bfloat16)

    with _as_on_gpu(), FlopCounterMode(display=False) as forward, \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        video_pred, audio_pred = transformer(
            hidden_states=latents(tokens, config.in_channels),
            audio_hidden_states=latents(audio, config.audio_in_channels),
            encoder_hidden_states=video_text, audio_encoder_hidden_states=audio_text,
            timestep=torch.empty(1, tokens, device=meta), audio_timestep=torch.empty(
                1, audio, device=meta), sigma=torch.empty(1, device=meta),
            encoder_attention_mask=text_mask, audio_encoder_attention_mask=text_mask,
            num_frames=frames, height=height, width=width, fps=step.frame_rate,
            audio_num_frames=audio,
            video_coords=transformer.rope.prepare_video_coords(
                1, frames, height, width, meta, fps=step.frame_rate),
            audio_coords=transformer.audio_rope.prepare_audio_coords(1, audio, meta),
            isolate_modalities=not step.with_audio,
            use_cross_timestep=bool(config.get("cross_attn_mod")), return_dict=False)
        loss = video_pred.float().square().mean()
        if step.with_audio:
            loss = loss + audio_pred.float().square().mean()
    with _as_on_gpu(), FlopCounterMode(display=False) as backward:
        loss.backward()
    outside = {k for k, (_, owner) in saved.items() if owner is None}
    last = len(inputs) - 1
    shared = set(inputs[0]).intersection(*(set(i) for i in inputs.values())) - outside
    return {
        "forward": forward.get_total_flops(), "backward": backward.get_total_flops(),
        "outside": sum(_nbytes(saved[k][0]) for k in outside),
        "last_block": sum(_nbytes(t) for t, owner in saved.values() if owner == last),
        "shared": sum(_nbytes(inputs[0][k]) for k in shared),
        "last_inputs": sum(_nbytes(t) for k, t in inputs[last].items()
                           if k not in shared | outside),
        "block_forward": sum(n for name, n in forward.get_flop_counts().get(
            f"{type(transformer).__name__}.transformer_blocks.{last}", {}).items()),
        "lora": sum(p.numel() for p in transformer.parameters() if p.requires_grad),
    }


def measure_step(shapes: Any, step: StepShape) -> tuple[StepCost, int]:
    """The cost of one step at the model's depth (from depths 1 and 2), and the FLOPs of
    the text connectors' forward."""
    *text, connector_flops = _text_features(shapes, step)
    one, two = (_measure(_with_depth(shapes, d), step, tuple(text)) for d in (1, 2))
    depth = shapes.configs["transformer"]["num_layers"]

    def at_depth(key: str) -> int:
        per_block = two[key] - one[key]
        return one[key] + (depth - 1) * per_block

    cost = StepCost(
        forward_flops=at_depth("forward"), backward_flops=at_depth("backward"),
        saved_outside=two["outside"], saved_per_block=two["last_block"],
        shared_inputs=two["shared"], inputs_per_block=two["last_inputs"],
        block_forward_flops=two["block_forward"], lora_per_block=two["lora"] - one["lora"])
    return cost, connector_flops


def model_shapes(model: Any = "ltx-2.3") -> Any:
    """ModelShapes from a release name, a diffusers folder or a single-file checkpoint."""
    from .model.shapes import SHAPES, ModelShapes

    if isinstance(model, ModelShapes):
        return model
    if isinstance(model, str) and model in SHAPES:
        return SHAPES[model]
    path = Path(model)
    if path.is_dir():
        return ModelShapes.from_model_dir(path)
    if path.is_file():
        from safetensors import SafetensorError, safe_open

        from .model.single_file import SHAPES_METADATA

        try:  # the shapes alone: the file's header, no Gemma folder needed
            with safe_open(path, framework="pt") as file:
                metadata = file.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path} is not a safetensors checkpoint: {exc}") from None
        if SHAPES_METADATA in metadata:
            return ModelShapes.from_json(metadata[SHAPES_METADATA])
        from .model.split_pack import is_split_transformer

        # a release's own file: an LTX-2.5 transformer file, or LTX-2.3's single file
        return SHAPES["ltx-2.5" if is_split_transformer(path) else "ltx-2.3"]
    raise ValueError(f"{model} is neither a release ({', '.join(SHAPES)}), a model folder "
                     "nor a checkpoint file")


def plan(spec: Any, model: Any = "ltx-2.3", gpu_memory_gb: float | None = None,
         gpu: str = "h100", utilisation: float = 0.4) -> Plan:
    """The plan of one training step of `spec` on `model` (a release name, a diffusers
    folder, a checkpoint or ModelShapes) on one GPU with `gpu_memory_gb` GiB."""
    from .model.low_memory import int8_bytes
    from .model.shapes import build_meta, parameter_count

    shapes = model_shapes(model)
    config = shapes.configs["transformer"]
    step = StepShape.from_spec(spec, spatial=config["vae_scale_factors"][1])
    cost, connector_flops = measure_step(shapes, step)
    card = GPUS[gpu]
    transformer = build_meta(shapes, "transformer")
    bf16, int8 = int8_bytes(transformer)
    return Plan(shapes.name, step, config["num_layers"], parameter_count(transformer),
                parameter_count(build_meta(shapes, "connectors")), cost, connector_flops,
                card, gpu_memory_gb or card.memory_gib, utilisation, int8_saving=bf16 - int8)


# -- the frozen base sharded over a node's GPUs (FSDP2, `--shard-base`) -----------------

#: blocks whose weights are gathered at once: the one running and the next, whose
#: all-gather FSDP2 issues early to overlap it with compute (in both passes)
GATHERED_BLOCKS = 2


@dataclass(frozen=True)
class ShardedPlan:
    """The step with the transformer sharded over `gpus` GPUs of a node
    (`training/sharding.py`), per GPU: 1/gpus of the transformer's weights and of the
    LoRA's state; what is gathered whole while the step runs (the weights outside the
    blocks for the whole step, two blocks' at a time); the text connectors whole (not
    sharded); and one rank's activations (each rank trains a sample of its own)."""

    plan: Plan
    gpus: int
    block_params: int  # one transformer block
    root_params: int  # the transformer's parameters outside its blocks

    def frozen_parts(self) -> dict[str, int]:
        p = self.plan
        lora_block = p.cost.lora_per_block
        return {
            "shard": p.transformer_params * BF16 // self.gpus,
            # the LoRA's layers are gathered with their block, in bf16; one block's LoRA
            # gradients are reduced in fp32
            "gathered": (self.root_params + GATHERED_BLOCKS * (self.block_params + lora_block))
            * BF16 + lora_block * 4,
            "connectors": p.connector_params * BF16,
        }

    def frozen(self) -> int:
        return sum(self.frozen_parts().values())

    def lora_state(self) -> int:
        return self.plan.lora_bytes // self.gpus

    def peak(self, checkpointed: int) -> int:
        return self.frozen() + self.lora_state() + self.plan.activations(checkpointed)

    def fewest_checkpointed(self) -> int | None:
        budget = (self.plan.gpu_memory_gib - RESERVE_GIB) * GIB
        return next((k for k in range(self.plan.depth + 1) if self.peak(k) <= budget), None)

    def blocks_to_checkpoint(self) -> int:
        k = self.fewest_checkpointed()
        return self.plan.depth if k is None else k

    @property
    def gathered_per_step(self) -> int:
        """Bytes each GPU receives by all-gathers in a step: the blocks' weights in the
        forward and again in the backward (freed between), the root's once; the
        checkpointed blocks' second forwards run while their backward holds them."""
        blocks = self.plan.transformer_params - self.root_params
        return (2 * blocks + self.root_params) * BF16 * (self.gpus - 1) // self.gpus

    def summary(self) -> dict[str, Any]:
        k, depth = self.fewest_checkpointed(), self.plan.depth
        planned = self.blocks_to_checkpoint()
        return {"gpus": self.gpus, "frozenGiB": self.frozen() / GIB,
                **{f"{name}GiB": n / GIB for name, n in self.frozen_parts().items()},
                "loraStateGiB": self.lora_state() / GIB,
                "peakGiB": self.peak(0) / GIB, "peakCheckpointedGiB": self.peak(depth) / GIB,
                "fits": k is not None, "checkpointedBlocks": planned,
                "plannedPeakGiB": self.peak(planned) / GIB,
                "secondsPlanned": self.plan.seconds(planned),
                "gatheredPerStepGiB": self.gathered_per_step / GIB}


def shard_plan(base: Plan, model: Any = "ltx-2.3", gpus: int = 2) -> ShardedPlan:
    """`base` (a plan of `model`) with the frozen base sharded over `gpus` GPUs."""
    from .model.shapes import build_meta, parameter_count

    if not 2 <= gpus <= 8:
        raise ValueError(f"the base is sharded over the 2 to 8 GPUs of a node, not {gpus}")
    transformer = build_meta(model_shapes(model), "transformer")
    blocks = transformer.transformer_blocks
    return ShardedPlan(base, gpus, parameter_count(blocks[0]),
                       parameter_count(transformer) - parameter_count(blocks))


def _sharded_rows(sharded: list[ShardedPlan]) -> list[list[str]]:
    first = sharded[0].plan

    def row(label: str, cell: Any) -> list[str]:
        return [label, *(cell(s) for s in sharded)]

    def fewest(s: ShardedPlan) -> str:
        k = s.fewest_checkpointed()
        return "does not fit" if k is None else "none" if k == 0 else f"{k} of {s.plan.depth}"

    def parts(s: ShardedPlan) -> str:
        return " / ".join(_gib(n) for n in s.frozen_parts().values())

    return [
        row("sharded base (--shard-base): GPUs of the node", lambda s: str(s.gpus)),
        row("  frozen weights per GPU", lambda s: _gib(s.frozen())),
        row("    shard / gathered (root + 2 blocks) / connectors", parts),
        row("  LoRA + grads + AdamW per GPU", lambda s: _gib(s.lora_state())),
        row("  peak, every block checkpointed", lambda s: _gib(s.peak(s.plan.depth))),
        row(f"  fewest checkpointed blocks for {first.gpu_memory_gib:g} GiB", fewest),
        row("  its peak", lambda s: _gib(s.peak(s.blocks_to_checkpoint()))),
        row(f"  seconds per step at {first.utilisation:.0%}, compute only",
            lambda s: f"{s.plan.seconds(s.blocks_to_checkpoint()):.2f}"),
        row("  all-gathered per step per GPU", lambda s: _gib(s.gathered_per_step)),
    ]


# -- the table --------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def table(plans: list[Plan], markdown: bool = False,
          sharded: list[ShardedPlan] | None = None) -> str:
    """The plans side by side, one column each (aligned text, or a Markdown table), with
    the rows of the base sharded when `sharded` gives each column's."""
    first = plans[0]

    def row(label: str, cell: Any) -> list[str]:
        return [label, *(cell(p) for p in plans)]

    def fewest(p: Plan, low_memory: bool = False) -> str:
        k = p.fewest_checkpointed(low_memory)
        return "does not fit" if k is None else "none" if k == 0 else f"{k} of {p.depth}"

    def low_peak(p: Plan) -> str:
        k = p.fewest_checkpointed(True)
        return _gib(p.peak(p.depth if k is None else k, True))

    def both(cell: Any) -> Any:  # every block checkpointed / the plan's blocks
        return lambda p: f"{cell(p, p.depth)} / {cell(p, p.planned_blocks)}"

    rows = [
        row("", lambda p: p.step.label),
        row("tokens: video / audio / text", lambda p: f"{p.step.video_tokens:,} / "
            f"{p.step.audio_frames:,} / {p.step.text_tokens:,}"),
        row("frozen weights, bf16", lambda p: _gib(p.frozen_bytes)),
        row(f"LoRA rank {first.step.rank}: parameters", lambda p: f"{p.lora_params / 1e6:,.1f} M"),
        row("LoRA + grads + AdamW, fp32", lambda p: _gib(p.lora_bytes)),
        row("activations, no checkpointing", lambda p: _gib(p.activations(0))),
        row("activations, every block checkpointed", lambda p: _gib(p.activations(p.depth))),
        row("peak, no checkpointing", lambda p: _gib(p.peak(0))),
        row("peak, every block checkpointed", lambda p: _gib(p.peak(p.depth))),
        row(f"fewest checkpointed blocks for {first.gpu_memory_gib:g} GiB", fewest),
        row("  its peak", lambda p: _gib(p.peak(p.planned_blocks))),
        row("TFLOPs per step: all / fewest checkpointed",
            both(lambda p, k: f"{p.flops(k) / 1e12:,.0f}")),
        row("text connectors, once per caption (no grad)",
            lambda p: f"{p.connector_flops / 1e12:,.1f}"),
        row(f"seconds per step at {first.utilisation:.0%}: all / fewest",
            both(lambda p, k: f"{p.seconds(k):.2f}")),
        row("low memory (--low-memory): frozen weights, int8 blocks",
            lambda p: _gib(p.frozen(True))),
        row("  LoRA + grads + 8-bit AdamW", lambda p: _gib(p.lora_state(True))),
        row("  peak, every block checkpointed", lambda p: _gib(p.peak(p.depth, True))),
        row(f"  fewest checkpointed blocks for {first.gpu_memory_gib:g} GiB",
            lambda p: fewest(p, True)),
        row("  its peak", low_peak),
    ]
    if sharded:
        rows += _sharded_rows(sharded)
    if markdown:
        cells = [[c.replace("|", "\\|") for c in r] for r in rows]
        cells[0][0] = "per training step"
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    head = (f"{first.model}: transformer {first.transformer_params / 1e9:.2f} B + connectors "
            f"{first.connector_params / 1e9:.2f} B parameters; one step on {first.gpu.name} "
            f"({first.gpu.bf16_flops / 1e12:,.0f} TFLOP/s dense bf16) at "
            f"{first.utilisation:.0%} of peak")
    lines = [head, ""] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                          for r in rows]
    return "\n".join(lines)


# -- command line (`ltx-extend plan`) ---------------------------------------------------

def add_parser(subparsers: Any, path: Any = Path) -> None:
    """`ltx-extend plan SPEC…`; `path` parses the file arguments (the CLI's path type)."""
    parser = subparsers.add_parser(
        "plan",
        help="compute the GPU memory and time of one training step for a spec",
        description="Measure one training step of SPEC on the model's real shapes (built on "
        "the meta device: no memory, no GPU): frozen weights, LoRA and optimizer state, "
        "activations with and without gradient checkpointing, peak, FLOPs per step and the "
        "predicted seconds per step at a stated utilisation of the GPU's dense bf16 peak.")
    parser.add_argument("specs", nargs="+", type=path, metavar="SPEC",
                        help="resource or request files; one column each")
    parser.add_argument("--model", default="ltx-2.3",
                        help="a release (ltx-2.5, ltx-2.3, ltx-2.0), a diffusers model folder, "
                        "a single-file checkpoint or an LTX-2.5 transformer file (default "
                        "ltx-2.3)")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    parser.add_argument("--gpu-memory", type=float, help="GiB of GPU memory (default: the GPU's)")
    parser.add_argument("--utilisation", type=float, default=0.4,
                        help="fraction of the dense bf16 peak reached (default 0.4)")
    parser.add_argument("--with-variants", action="store_true",
                        help="also plan the first spec with audio, and at high resolution "
                        "with 121 frames")
    parser.add_argument("--shard-base", type=int, nargs="?", const=0, metavar="G",
                        help="also plan each step with the frozen base sharded over G GPUs "
                        "of a node (FSDP2, the trainer's --shard-base); without G, over "
                        "each spec's gpus")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per spec")
    output.add_argument("--markdown", action="store_true", help="the table in Markdown")
    parser.set_defaults(func=run)


def variants(spec: Any) -> list[Any]:
    """The spec with audio on, and at high resolution with 121 frames."""
    from ltx_contract.spec import parse_spec

    body = json.loads(spec.to_json())
    return [parse_spec({**body, "withAudio": True}),
            parse_spec({**body, "resolution": "high", "numberOfFrames": 121})]


def run(args: argparse.Namespace) -> int:
    from ltx_contract.outcomes import ExitCode

    from .spec_file import read_spec_or_report

    specs = [read_spec_or_report(path) for path in args.specs]
    if any(spec is None for spec in specs):
        return ExitCode.INVALID_INPUT
    if not 0 < args.utilisation <= 1:
        print("--utilisation must be in (0, 1]", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    if args.with_variants:
        specs += variants(specs[0])
    try:
        shapes = model_shapes(args.model)
        plans = [plan(spec, shapes, args.gpu_memory, args.gpu, args.utilisation)
                 for spec in specs]
    except (ValueError, FileNotFoundError) as exc:
        print(f"--model {args.model}: {exc}", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    sharded = None
    if args.shard_base is not None:
        try:
            sharded = [shard_plan(p, shapes, args.shard_base or _spec_gpus(spec))
                       for p, spec in zip(plans, specs, strict=True)]
        except ValueError as exc:
            print(f"--shard-base: {exc}", file=sys.stderr)
            return ExitCode.INVALID_INPUT
    if args.json:
        for i, p in enumerate(plans):
            extra = {"shardedBase": sharded[i].summary()} if sharded else {}
            print(json.dumps({**p.summary(), "cost": asdict(p.cost), **extra}))
    else:
        print(table(plans, markdown=args.markdown, sharded=sharded))
    return ExitCode.SUCCESS


def _spec_gpus(spec: Any) -> int:
    if not spec.gpus or spec.gpus < 2:
        raise ValueError(f"without a count the base is sharded over the spec's gpus, and it "
                         f"asks for {spec.gpus or 'the default'}: give the count "
                         "(--shard-base 2) or set gpus")
    return spec.gpus

