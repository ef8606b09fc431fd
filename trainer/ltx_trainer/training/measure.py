"""One training step measured on the meta device: its FLOPs and the bytes autograd keeps,
from the model's real shapes and the spec's token counts (`memory.py` turns them into
the memory and time of the step on a GPU).

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

from dataclasses import dataclass
from typing import Any


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

        from ..codec.text import DEFAULT_TEXT_TOKENS

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
    from ..model.shapes import ModelShapes

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

    from ..model.shapes import build_meta

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

    from ..model.adapter import add_lora, trained_modalities
    from ..model.shapes import build_meta

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

