"""LTX-2's real shapes as data, and random-weight models built from them.

The release configs of LTX-2.0, LTX-2.3 and LTX-2.5 for each component, in the form
diffusers' classes take (the values diffusers' LTX-2 conversion script gives, Gemma-3-12B's
for the 2.0/2.3 text encoder, Gemma-4-12B's for 2.5's). From them:

- `build_meta` builds a component on the meta device: the full 22B model, no memory;
- `build_component` builds it with seeded random weights straight on any device (meta,
  then `to_empty`, so a 19B transformer never passes through CPU memory or fp32);
- `real_shapes` cuts them to one block / layer per stack, which `writer.py` writes in
  both layouts for tests and benchmarks that need the real shapes on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the command line starts without it
    import torch

# -- the release configs ----------------------------------------------------------------

_TRANSFORMER_COMMON: dict[str, Any] = {
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1,
    "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096,
    "vae_scale_factors": [8, 32, 32], "pos_embed_max_pos": 20, "base_height": 2048,
    "base_width": 2048, "audio_in_channels": 128, "audio_out_channels": 128,
    "audio_patch_size": 1, "audio_patch_size_t": 1, "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048, "audio_scale_factor": 4,
    "audio_pos_embed_max_pos": 20, "audio_sampling_rate": 16000, "audio_hop_length": 160,
    "num_layers": 48, "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 3840,
    "attention_bias": True, "attention_out_bias": True, "rope_theta": 10000.0,
    "rope_double_precision": True, "causal_offset": 1, "timestep_scale_multiplier": 1000,
    "cross_attn_timestep_scale_multiplier": 1000, "rope_type": "split",
}
#: 2.3: gated attention, prompt (cross-attention) modulation, text projected per modality
#: in the connectors instead of a caption projection, the STG block.
TRANSFORMER_2_3 = {**_TRANSFORMER_COMMON, "gated_attn": True, "cross_attn_mod": True,
                   "audio_gated_attn": True, "audio_cross_attn_mod": True,
                   "use_prompt_embeddings": False, "perturbed_attn": True}
#: 2.5: 2.3's widths without the video feed-forward biases, with a static (timestep-free)
#: prompt modulation table and the learned keyframe position embedding
TRANSFORMER_2_5 = {**TRANSFORMER_2_3, "ff_bias": False, "use_prompt_adaln_single": False,
                   "use_keyframes_abs_pos_embedding": True}
TRANSFORMER_2_0 = {**_TRANSFORMER_COMMON, "gated_attn": False, "cross_attn_mod": False,
                   "audio_gated_attn": False, "audio_cross_attn_mod": False,
                   "use_prompt_embeddings": True, "perturbed_attn": False}

_CONNECTORS_COMMON: dict[str, Any] = {
    "caption_channels": 3840, "text_proj_in_factor": 49,  # Gemma-3-12B: 48 layers + embeddings
    "video_connector_num_learnable_registers": 128, "audio_connector_num_learnable_registers": 128,
    "connector_rope_base_seq_len": 4096, "rope_theta": 10000.0, "rope_double_precision": True,
    "causal_temporal_positioning": False, "rope_type": "split",
}


def _connector(modality: str, heads: int, head_dim: int, layers: int, gated: bool
               ) -> dict[str, Any]:
    return {f"{modality}_connector_num_attention_heads": heads,
            f"{modality}_connector_attention_head_dim": head_dim,
            f"{modality}_connector_num_layers": layers, f"{modality}_gated_attn": gated}


#: 2.3: eight gated layers each, as wide as the transformer streams they feed
CONNECTORS_2_3 = {**_CONNECTORS_COMMON, **_connector("video", 32, 128, 8, True),
                  **_connector("audio", 32, 64, 8, True), "per_modality_projections": True,
                  "video_hidden_dim": 4096, "audio_hidden_dim": 2048, "proj_bias": True}
CONNECTORS_2_0 = {**_CONNECTORS_COMMON, **_connector("video", 30, 128, 2, False),
                  **_connector("audio", 30, 128, 2, False), "per_modality_projections": False,
                  "proj_bias": False}

_VAE_COMMON: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "down_block_types": ["LTX2VideoDownBlock3D"] * 4, "spatio_temporal_scaling": [True] * 4,
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "timestep_conditioning": False, "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6,
    "encoder_causal": True, "decoder_causal": False, "encoder_spatial_padding_mode": "zeros",
    "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
}
VAE_2_3 = {**_VAE_COMMON, "block_out_channels": [256, 512, 1024, 1024],
           "decoder_block_out_channels": [256, 512, 512, 1024],
           "layers_per_block": [4, 6, 4, 2, 2], "decoder_layers_per_block": [4, 6, 4, 2, 2],
           "decoder_spatio_temporal_scaling": [True] * 4, "decoder_inject_noise": [False] * 5,
           "upsample_type": ["spatiotemporal", "spatiotemporal", "temporal", "spatial"],
           "upsample_residual": [False] * 4, "upsample_factor": [2, 2, 1, 2],
           "decoder_spatial_padding_mode": "zeros"}
VAE_2_0 = {**_VAE_COMMON, "block_out_channels": [256, 512, 1024, 2048],
           "decoder_block_out_channels": [256, 512, 1024],
           "layers_per_block": [4, 6, 6, 2, 2], "decoder_layers_per_block": [5, 5, 5, 5],
           "decoder_spatio_temporal_scaling": [True] * 3, "decoder_inject_noise": [False] * 4,
           "upsample_type": ["spatiotemporal"] * 3, "upsample_residual": [True] * 3,
           "upsample_factor": [2, 2, 2], "decoder_spatial_padding_mode": "reflect"}

#: 2.5's diffusion decoder: a small diffusion model over pixels, conditioned on the same
#: latents the convolutional decoder takes (diffusers' `LTX2VideoDiffusionDecoderModel`)
DIFFUSION_DECODER_2_5: dict[str, Any] = {
    "out_channels": 3, "latent_channels": 128, "patch_size": 4, "scaling_factor": 1.0,
    "decoder_head_dim": 64, "decoder_stage_channels": [2048, 1024, 512, 512, 256],
    "decoder_stage_depths": [4, 6, 4, 2, 8],
    "decoder_stage_kernels": [[3, 7, 7], [3, 7, 7], [3, 5, 5], [3, 5, 5]],
    "decoder_upsample_strides": [[1, 2, 2], [2, 1, 1], [2, 2, 2], [2, 2, 2]],
    "decoder_upsample_channel_reductions": [2, 2, 1, 2], "decoder_stage5_kernel": [11, 11, 11],
    "decoder_t_emb_dim": 384, "decoder_timestep_scale_multiplier": 1000.0,
    "decoder_model_output_type": "x0", "decoder_num_inference_steps": 1,
    "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
}

#: the same audio VAE in every release
AUDIO_VAE = {"base_channels": 128, "output_channels": 2, "ch_mult": [1, 2, 4],
             "num_res_blocks": 2, "attn_resolutions": None, "in_channels": 2, "resolution": 256,
             "latent_channels": 8, "norm_type": "pixel", "causality_axis": "height",
             "dropout": 0.0, "mid_block_add_attention": False, "sample_rate": 16000,
             "mel_hop_length": 160, "is_causal": True, "mel_bins": 64, "double_z": True}

_RESNETS = {"resnet_kernel_sizes": [3, 7, 11], "resnet_dilations": [[1, 3, 5]] * 3}
#: 2.3: a 16 kHz vocoder followed by a bandwidth extension to 48 kHz
VOCODER_2_3 = {"in_channels": 128, "hidden_channels": 1536, "out_channels": 2,
               "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4], "upsample_factors": [5, 2, 2, 2, 2, 2],
               **_RESNETS, "act_fn": "snakebeta", "leaky_relu_negative_slope": 0.1,
               "antialias": True, "antialias_ratio": 2, "antialias_kernel_size": 12,
               "final_act_fn": None, "final_bias": False, "bwe_in_channels": 128,
               "bwe_hidden_channels": 512, "bwe_out_channels": 2,
               "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4],
               "bwe_upsample_factors": [6, 5, 2, 2, 2],
               "bwe_resnet_kernel_sizes": [3, 7, 11], "bwe_resnet_dilations": [[1, 3, 5]] * 3,
               "bwe_act_fn": "snakebeta", "bwe_leaky_relu_negative_slope": 0.1,
               "bwe_antialias": True, "bwe_antialias_ratio": 2, "bwe_antialias_kernel_size": 12,
               "bwe_final_act_fn": None, "bwe_final_bias": False, "filter_length": 512,
               "hop_length": 80, "window_length": 512, "num_mel_channels": 64,
               "input_sampling_rate": 16000, "output_sampling_rate": 48000}
VOCODER_2_0 = {"in_channels": 128, "hidden_channels": 1024, "out_channels": 2,
               "upsample_kernel_sizes": [16, 15, 8, 4, 4], "upsample_factors": [6, 5, 2, 2, 2],
               **_RESNETS, "act_fn": "leaky_relu", "leaky_relu_negative_slope": 0.1,
               "antialias": False, "final_act_fn": "tanh", "final_bias": True,
               "output_sampling_rate": 24000}

#: Gemma-3-12B (both releases' text encoder)
GEMMA_3_12B = {
    "text_config": {"hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
                    "query_pre_attn_scalar": 256, "sliding_window": 1024, "vocab_size": 262208,
                    "rope_parameters": {
                        "full_attention": {"rope_type": "linear", "factor": 8.0,
                                           "rope_theta": 1_000_000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}},
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                      "num_attention_heads": 16, "image_size": 896, "patch_size": 14,
                      "vision_use_head": False},
    "mm_tokens_per_image": 256, "boi_token_index": 255999, "eoi_token_index": 256000,
    "image_token_index": 262144,
}

#: Gemma-4-12B, fine-tuned by Lightricks as LTX-2.5's text encoder (text only: the vision
#: and audio towers are not part of it). Its text width is 3,840 like Gemma-3-12B's (the
#: width transformers' Gemma-4 configs give the 12B's multimodal embedder).
GEMMA_4_12B = {
    "model_type": "gemma4_unified",
    "text_config": {"hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
                    "global_head_dim": 512, "sliding_window": 1024, "vocab_size": 262144},
    "vision_config": None, "audio_config": None,
}
#: the metadata a text-encoder file of the LTX-tuned Gemma 4 carries (a stock Gemma 4 has none)
LTX_GEMMA_4 = "gemma4-12b-ltx-v1"

#: the flow-matching scheduler of the LTX-2 pipelines (resolution-dependent shift)
SCHEDULER = {"use_dynamic_shifting": True, "base_shift": 0.95, "max_shift": 2.05,
             "base_image_seq_len": 1024, "max_image_seq_len": 4096, "shift_terminal": 0.1}

#: the model components, in the order they are built and written
COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder")
#: a component only some releases have (LTX-2.5's diffusion video decoder)
DIFFUSION_DECODER = "diffusion_decoder"


@dataclass(frozen=True)
class ModelShapes:
    """Every component's config: what a model is, without its weights."""

    name: str
    configs: Mapping[str, Mapping[str, Any]] = field(repr=False)

    @property
    def version(self) -> str:
        """The release the transformer's config is of (`release.transformer_version`)."""
        from .release import transformer_version

        return transformer_version(self.configs["transformer"])

    @property
    def components(self) -> tuple[str, ...]:
        """The weighted components, in build order (the diffusion decoder where it ships)."""
        extra = (DIFFUSION_DECODER,) if DIFFUSION_DECODER in self.configs else ()
        return (*COMPONENTS[:-1], *extra, COMPONENTS[-1])

    def config(self, name: str) -> dict[str, Any]:
        return json.loads(json.dumps(self.configs[name]))  # a deep copy

    def cut_depth(self) -> ModelShapes:
        """The same widths, heads and channels with one block / layer per stack: one
        transformer block, one layer per connector and in the text encoder (whose
        hidden states, one per layer plus the embeddings, the connectors take in), one
        resnet per VAE stage and per vocoder upsampling."""
        c = {name: self.config(name) for name in self.configs}
        c["transformer"]["num_layers"] = 1
        text = c["text_encoder"]["text_config"]
        text["num_hidden_layers"] = 1
        if c["text_encoder"].get("vision_config"):
            c["text_encoder"]["vision_config"]["num_hidden_layers"] = 1
        c["connectors"].update(video_connector_num_layers=1, audio_connector_num_layers=1,
                               text_proj_in_factor=text["num_hidden_layers"] + 1)
        vae = c["vae"]
        vae["layers_per_block"] = [1] * len(vae["layers_per_block"])
        vae["decoder_layers_per_block"] = [1] * len(vae["decoder_layers_per_block"])
        c["audio_vae"]["num_res_blocks"] = 1
        if DIFFUSION_DECODER in c:
            stages = c[DIFFUSION_DECODER]["decoder_stage_depths"]
            c[DIFFUSION_DECODER]["decoder_stage_depths"] = [1] * len(stages)
        for prefix in ("", "bwe_"):
            if f"{prefix}resnet_kernel_sizes" in c["vocoder"]:
                c["vocoder"][f"{prefix}resnet_kernel_sizes"] = [3]
                c["vocoder"][f"{prefix}resnet_dilations"] = [[1, 3, 5]]
        return ModelShapes(f"{self.name}-1-block", c)

    def with_vocabulary(self, size: int, special_token: int) -> ModelShapes:
        """A small text vocabulary (the image tokens point at `special_token`)."""
        c = {name: self.config(name) for name in self.configs}
        c["text_encoder"]["text_config"]["vocab_size"] = size
        tokens = (("boi_token_id", "eoi_token_id", "image_token_id", "video_token_id",
                   "boa_token_id", "eoa_token_index", "audio_token_id")
                  if is_gemma_4(c["text_encoder"]) else
                  ("boi_token_index", "eoi_token_index", "image_token_index"))
        c["text_encoder"].update(dict.fromkeys(tokens, special_token))
        return ModelShapes(self.name, c)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "configs": self.configs}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelShapes:
        data = json.loads(text)
        return cls(data["name"], data["configs"])

    @classmethod
    def from_folder(cls, folder: Path) -> ModelShapes:
        """The shapes of a diffusers model folder, read from its config files."""
        configs: dict[str, Any] = {}
        for name in (*COMPONENTS, DIFFUSION_DECODER, "scheduler"):
            path = folder / name / ("scheduler_config.json" if name == "scheduler"
                                       else "config.json")
            if path.is_file():
                configs[name] = json.loads(path.read_text())
        missing = [n for n in ("transformer", "connectors") if n not in configs]
        if missing:
            raise FileNotFoundError(f"{folder} has no {' or '.join(missing)} config: "
                                    "not an LTX-2 diffusers model folder")
        return cls(folder.name, configs)


LTX_2_3 = ModelShapes("ltx-2.3", {
    "transformer": TRANSFORMER_2_3, "connectors": CONNECTORS_2_3, "vae": VAE_2_3,
    "audio_vae": AUDIO_VAE, "vocoder": VOCODER_2_3, "text_encoder": GEMMA_3_12B,
    "scheduler": SCHEDULER})
LTX_2_0 = ModelShapes("ltx-2.0", {
    "transformer": TRANSFORMER_2_0, "connectors": CONNECTORS_2_0, "vae": VAE_2_0,
    "audio_vae": AUDIO_VAE, "vocoder": VOCODER_2_0, "text_encoder": GEMMA_3_12B,
    "scheduler": SCHEDULER})
#: 2.5: 2.3's VAEs (the same latent space, the convolutional decoder kept beside the new
#: diffusion decoder), its 48 kHz vocoder and scheduler; Gemma 4 for the text
LTX_2_5 = ModelShapes("ltx-2.5", {
    "transformer": TRANSFORMER_2_5, "connectors": CONNECTORS_2_3, "vae": VAE_2_3,
    "audio_vae": AUDIO_VAE, "vocoder": VOCODER_2_3, "text_encoder": GEMMA_4_12B,
    DIFFUSION_DECODER: DIFFUSION_DECODER_2_5, "scheduler": SCHEDULER})
SHAPES = {shapes.name: shapes for shapes in (LTX_2_5, LTX_2_3, LTX_2_0)}


def is_gemma_4(text_encoder_config: Mapping[str, Any]) -> bool:
    """Whether a text encoder config is Gemma 4's (LTX-2.5) rather than Gemma 3's."""
    return str(text_encoder_config.get("model_type", "")).startswith("gemma4")


def shapes_named(name: str) -> ModelShapes:
    if name not in SHAPES:
        raise ValueError(f"unknown model shapes {name!r}: choose one of {', '.join(SHAPES)}")
    return SHAPES[name]


# -- building components ----------------------------------------------------------------

def component_class(shapes: ModelShapes, name: str) -> type:
    """The diffusers / transformers class of a component (the vocoder's depends on the
    release: 2.3's carries the bandwidth extension)."""
    if name == "text_encoder":
        if is_gemma_4(shapes.configs["text_encoder"]):
            from transformers import Gemma4UnifiedForConditionalGeneration

            return Gemma4UnifiedForConditionalGeneration
        from transformers import Gemma3ForConditionalGeneration

        return Gemma3ForConditionalGeneration
    if name == DIFFUSION_DECODER:
        from diffusers import LTX2VideoDiffusionDecoderModel

        return LTX2VideoDiffusionDecoderModel
    if name in ("connectors", "vocoder"):
        from diffusers.pipelines import ltx2

        if name == "connectors":
            return ltx2.LTX2TextConnectors
        bwe = "bwe_hidden_channels" in shapes.configs["vocoder"]
        return ltx2.LTX2VocoderWithBWE if bwe else ltx2.LTX2Vocoder
    import diffusers

    return getattr(diffusers, {"transformer": "LTX2VideoTransformer3DModel",
                               "vae": "AutoencoderKLLTX2Video",
                               "audio_vae": "AutoencoderKLLTX2Audio"}[name])


def instantiate(shapes: ModelShapes, name: str) -> torch.nn.Module:
    """The component with its constructor's weights, on the current default device."""
    cls = component_class(shapes, name)
    config = shapes.config(name)
    if name == "text_encoder":
        if is_gemma_4(config):
            from transformers import Gemma4UnifiedConfig

            config.pop("model_type", None)
            return cls(Gemma4UnifiedConfig(**config))
        from transformers import Gemma3Config

        return cls(Gemma3Config(**config))
    return cls.from_config(config)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_meta(shapes: ModelShapes, name: str, dtype: torch.dtype | None = None
               ) -> torch.nn.Module:
    """The component on the meta device (bf16 unless `dtype`): its parameters have
    shapes but no memory."""
    import torch

    with torch.device("meta"), default_dtype(dtype or torch.bfloat16):
        return instantiate(shapes, name)


def build_component(shapes: ModelShapes, name: str, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None, seed: int = 0) -> torch.nn.Module:
    """The component with seeded random weights in `dtype` (bf16) on `device`, in eval
    mode.

    The parameters are laid out on the meta device and materialised on `device`
    directly (a 19B transformer never passes through CPU memory or fp32); the buffers,
    such as the vocoder's filters, are small and computed at construction as usual."""
    import torch
    from accelerate import init_empty_weights

    device, dtype = torch.device(device), dtype or torch.bfloat16
    with init_empty_weights(include_buffers=False):
        model = instantiate(shapes, name)
    torch.nn.Module.to(model, dtype=dtype)  # meta parameters cost nothing to cast
    buffers = {key: buffer.to(device) for key, buffer in model.named_buffers()}
    model.to_empty(device=device)
    for key, buffer in buffers.items():
        owner, _, leaf = key.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = buffer
    if hasattr(model, "tie_weights"):  # transformers models: Gemma's lm_head is its embedding
        model.tie_weights()
    randomize(model, seed=seed * 100 + shapes.components.index(name))
    return model.eval().requires_grad_(False)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights at the scale trained weights have: variance 1/fan_in for matrices
    and kernels, ones for norm gains, zeros for biases. Buffers are left as constructed."""
    import torch

    device = next(model.parameters()).device
    if device.type == "meta":  # shapes only: nothing to draw
        return
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        _draw(model, generator)


def _draw(model: torch.nn.Module, generator: torch.Generator) -> None:
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if param.dim() >= 2:
            bound = math.sqrt(3.0 / param[0].numel())  # uniform: cheaper than normal on CPU
            param.uniform_(-bound, bound, generator=generator)
        elif "norm" in name and leaf == "weight":
            param.fill_(1.0)
        elif leaf == "bias":
            param.zero_()
        else:
            param.uniform_(-0.03, 0.03, generator=generator)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def real_shapes(name: str = "ltx-2.3") -> ModelShapes:
    """The release shapes cut to one block / layer, with the small word vocabulary of the
    tiny model's tokenizer."""
    from .tiny import SPECIAL, WORDS

    return shapes_named(name).cut_depth().with_vocabulary(
        len(SPECIAL) + len(WORDS), special_token=SPECIAL.index("<unk>"))
