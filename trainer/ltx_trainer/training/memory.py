"""The memory plan of one training step on a GPU: frozen weights, LoRA and optimizer
state, activations with and without gradient checkpointing, the peak, FLOPs and seconds,
from the step measured on the meta device (`measure.py`); and the same step with the
frozen base sharded over a node's GPUs (`sharding.py`). The trainer picks its
checkpointed blocks from it (`speed.py`); `ltx-extend plan` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .measure import StepCost, StepShape, measure_step

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
class MemoryPlan:
    """One training step of `model` on one GPU, in bytes, FLOPs and seconds."""

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
        from ..model.low_memory import LORA_BYTES_PER_PARAM_8BIT

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


def model_shapes(model: Any = "ltx-2.3") -> Any:
    """ModelShapes from a release name, a diffusers folder or a single-file checkpoint."""
    from ..model.shapes import SHAPES, ModelShapes

    if isinstance(model, ModelShapes):
        return model
    if isinstance(model, str) and model in SHAPES:
        return SHAPES[model]
    path = Path(model)
    if path.is_dir():
        return ModelShapes.from_folder(path)
    if path.is_file():
        from safetensors import SafetensorError, safe_open

        from ..model.single_file import SHAPES_METADATA

        try:  # the shapes alone: the file's header, no Gemma folder needed
            with safe_open(path, framework="pt") as file:
                metadata = file.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path} is not a safetensors checkpoint: {exc}") from None
        if SHAPES_METADATA in metadata:
            return ModelShapes.from_json(metadata[SHAPES_METADATA])
        from ..model.split_pack import is_split_transformer

        # a release's own file: an LTX-2.5 transformer file, or LTX-2.3's single file
        return SHAPES["ltx-2.5" if is_split_transformer(path) else "ltx-2.3"]
    raise ValueError(f"{model} is neither a release ({', '.join(SHAPES)}), a model folder "
                     "nor a checkpoint file")


def plan(spec: Any, model: Any = "ltx-2.3", gpu_memory_gb: float | None = None,
         gpu: str = "h100", utilisation: float = 0.4) -> MemoryPlan:
    """The plan of one training step of `spec` on `model` (a release name, a diffusers
    folder, a checkpoint or ModelShapes) on one GPU with `gpu_memory_gb` GiB."""
    from ..model.low_memory import int8_bytes
    from ..model.shapes import build_meta, parameter_count

    shapes = model_shapes(model)
    config = shapes.configs["transformer"]
    step = StepShape.from_spec(spec, spatial=config["vae_scale_factors"][1])
    cost, connector_flops = measure_step(shapes, step)
    card = GPUS[gpu]
    transformer = build_meta(shapes, "transformer")
    bf16, int8 = int8_bytes(transformer)
    return MemoryPlan(shapes.name, step, config["num_layers"], parameter_count(transformer),
                parameter_count(build_meta(shapes, "connectors")), cost, connector_flops,
                card, gpu_memory_gb or card.memory_gib, utilisation, int8_saving=bf16 - int8)


# -- the frozen base sharded over a node's GPUs (FSDP2, `--shard-base`) -----------------

#: blocks whose weights are gathered at once: the one running and the next, whose
#: all-gather FSDP2 issues early to overlap it with compute (in both passes)
GATHERED_BLOCKS = 2


@dataclass(frozen=True)
class ShardedMemoryPlan:
    """The step with the transformer sharded over `gpus` GPUs of a node
    (`training/sharding.py`), per GPU: 1/gpus of the transformer's weights and of the
    LoRA's state; what is gathered whole while the step runs (the weights outside the
    blocks for the whole step, two blocks' at a time); the text connectors whole (not
    sharded); and one rank's activations (each rank trains a sample of its own)."""

    plan: MemoryPlan
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


def shard_plan(base: MemoryPlan, model: Any = "ltx-2.3", gpus: int = 2) -> ShardedMemoryPlan:
    """`base` (a plan of `model`) with the frozen base sharded over `gpus` GPUs."""
    from ..model.shapes import build_meta, parameter_count

    if not 2 <= gpus <= 8:
        raise ValueError(f"the base is sharded over the 2 to 8 GPUs of a node, not {gpus}")
    transformer = build_meta(model_shapes(model), "transformer")
    blocks = transformer.transformer_blocks
    return ShardedMemoryPlan(base, gpus, parameter_count(blocks[0]),
                       parameter_count(transformer) - parameter_count(blocks))
