"""The official single-file LTX-2 checkpoint (`ltx-2.3-22b-dev.safetensors`, the file
ComfyUI and Lightricks' tools load) plus a Gemma-3 folder.

One file holds the transformer and the text connectors (`model.diffusion_model.*`, the
connectors' input projections under `text_embedding_projection.*`), the video VAE
(`vae.*`), the audio VAE (`audio_vae.*`) and the vocoder (`vocoder.*`) under their
original names; the text encoder and its tokenizer are Gemma-3's own folder.

Loading goes through diffusers' single-file loaders where diffusers has them
(`from_single_file` for the transformer and the two VAEs, with the configs of the
release), completed where diffusers 0.42's key tables stop short of LTX-2.3 (the
transformer's prompt modulation, the video decoder's fourth stage); the connectors and
the vocoder have no single-file loader in diffusers and are mapped here. Everything that
can be wrong with the files is found by `describe_single_file` from the file's header
and the Gemma folder's config, before any weight is read.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltx_contract.outcomes import InvalidInput

from .profile import ModelProfile, profile_from_shapes
from .shapes import COMPONENTS, LTX_2_3, ModelShapes, build_meta, component_class, shapes_named

log = logging.getLogger(__name__)

TRANSFORMER_PREFIX = "model.diffusion_model."
PROJECTION_PREFIX = "text_embedding_projection."
PREFIXES = {"vae": "vae.", "audio_vae": "audio_vae.", "vocoder": "vocoder."}
#: the Gemma-3 folder written beside a checkpoint by `writer.write_layouts`
GEMMA_DIR = "gemma-3"
#: metadata entry of a checkpoint whose shapes are not a release's (our random models)
SHAPES_METADATA = "ltx_extend_shapes"

# Whole dotted segments: diffusers name → original name.
_TRANSFORMER_NAMES = {
    "proj_in": "patchify_proj", "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single", "audio_time_embed": "audio_adaln_single",
    "prompt_adaln": "prompt_adaln_single", "audio_prompt_adaln": "audio_prompt_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
    "video_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_video",
    "audio_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_audio",
    "norm_q": "q_norm", "norm_k": "k_norm",
}
_CONNECTOR_NAMES = {
    "video_connector": "video_embeddings_connector",
    "audio_connector": "audio_embeddings_connector",
    "transformer_blocks": "transformer_1d_blocks", "norm_q": "q_norm", "norm_k": "k_norm",
    "video_text_proj_in": "video_aggregate_embed", "audio_text_proj_in": "audio_aggregate_embed",
    "text_proj_in": "aggregate_embed",
}
_VOCODER_NAMES = {"upsamplers": "ups", "resnets": "resblocks", "conv_in": "conv_pre",
                  "conv_out": "conv_post", "act_out": "act_post"}
_STATISTICS = {"latents_mean": "per_channel_statistics.mean-of-means",
               "latents_std": "per_channel_statistics.std-of-means"}
#: original keys that diffusers' converters drop on purpose
_DROPPED = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")
#: 2.3 transformer keys diffusers 0.42's single-file table does not rename
_PROMPT_ADALN = {"prompt_adaln_single": "prompt_adaln", "audio_prompt_adaln_single":
                 "audio_prompt_adaln"}


#: the metadata entry the official releases carry: their configs as ltx-core and ComfyUI
#: read them (JSON); the loaders refuse, or misread, a file without it
CONFIG_METADATA = "config"
#: what ltx-core requires of a transformer config (it refuses any other value), in the
#: releases' own form
_LTX_CORE_FIXED: dict[str, Any] = {
    "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None,
    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
    "use_linear_projection": False, "only_cross_attention": False,
    "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
    "standardization_norm": "rms_norm", "norm_elementwise_affine": False,
    "qk_norm": "rms_norm", "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True, "share_ff": False, "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
}


def release_config(shapes: ModelShapes) -> dict[str, Any]:
    """The `config` metadata of a release's single file, from its diffusers configs: the
    transformer and its text connectors in the original names (ltx-core builds the model
    from them; ComfyUI reads LTX-2.3's flags — gated attention, prompt modulation, the
    caption projection's place — from them alone)."""
    t, c = shapes.configs["transformer"], shapes.configs["connectors"]
    transformer = {
        **_LTX_CORE_FIXED,
        "num_attention_heads": t["num_attention_heads"],
        "attention_head_dim": t["attention_head_dim"],
        "in_channels": t["in_channels"], "out_channels": t["out_channels"],
        "num_layers": t["num_layers"], "cross_attention_dim": t["cross_attention_dim"],
        "caption_channels": t["caption_channels"], "norm_eps": t["norm_eps"],
        "positional_embedding_theta": t["rope_theta"],
        "positional_embedding_max_pos": [t["pos_embed_max_pos"], t["base_height"],
                                         t["base_width"]],
        "timestep_scale_multiplier": t["timestep_scale_multiplier"],
        "av_ca_timestep_scale_multiplier": t["cross_attn_timestep_scale_multiplier"],
        "audio_num_attention_heads": t["audio_num_attention_heads"],
        "audio_attention_head_dim": t["audio_attention_head_dim"],
        "audio_in_channels": t["audio_in_channels"],
        "audio_out_channels": t["audio_out_channels"],
        "audio_cross_attention_dim": t["audio_cross_attention_dim"],
        "audio_positional_embedding_max_pos": [t["audio_pos_embed_max_pos"]],
        "rope_type": t["rope_type"],
        "frequencies_precision": "float64" if t["rope_double_precision"] else "float32",
        "apply_gated_attention": bool(t.get("gated_attn")),
        "cross_attention_adaln": bool(t.get("cross_attn_mod")),
        # 2.3 projects the text per modality in its connectors, before them; 2.0 in the
        # transformer's caption projection
        "caption_proj_before_connector": not t.get("use_prompt_embeddings", True),
        "use_prompt_adaln_single": t.get("use_prompt_adaln_single", True),
        "ff_bias": t.get("ff_bias", True),
        "use_keyframes_abs_pos_embedding": t.get("use_keyframes_abs_pos_embedding", False),
        "connector_num_attention_heads": c["video_connector_num_attention_heads"],
        "connector_attention_head_dim": c["video_connector_attention_head_dim"],
        "connector_num_layers": c["video_connector_num_layers"],
        "connector_apply_gated_attention": bool(c.get("video_gated_attn")),
        "connector_positional_embedding_max_pos": [c["connector_rope_base_seq_len"]],
        "audio_connector_num_attention_heads": c["audio_connector_num_attention_heads"],
        "audio_connector_attention_head_dim": c["audio_connector_attention_head_dim"],
        "audio_connector_num_layers": c["audio_connector_num_layers"],
    }
    return {"transformer": transformer, "vae": _vae_config(shapes.configs["vae"]),
            "audio_vae": _audio_vae_config(shapes.configs["audio_vae"]),
            "vocoder": _vocoder_config(shapes.configs["vocoder"])}


#: diffusers' down/upsampling kind → the stride's name in the original block lists
_SAMPLING = {"spatial": "space", "temporal": "time", "spatiotemporal": "all"}


def _vae_config(v: dict[str, Any]) -> dict[str, Any]:
    """The video VAE as ltx-core's configurators build it: one flat list of blocks per
    side, in the encoder's order (pixels first; the decoder is built from its reverse), each
    stage's resnets (`res_x`) and its resampler with the channel multiplier it applies."""
    if not all(v["spatio_temporal_scaling"]) or not all(v["decoder_spatio_temporal_scaling"]):
        raise ValueError("a VAE stage without resampling has no form in the release config")
    encoder, width = [], v["latent_channels"]  # the encoder's conv_in is latent-wide
    for layers, kind, out in zip(v["layers_per_block"], v["downsample_type"],
                                 v["block_out_channels"], strict=False):
        encoder += [["res_x", {"num_layers": layers}],
                    [f"compress_{_SAMPLING[kind]}_res", {"multiplier": out // width}]]
        width = out
    encoder.append(["res_x", {"num_layers": v["layers_per_block"][-1]}])
    # diffusers lists the decoder's widths, factors, noise and residual flags pixels first
    # but its upsample types latents first; ltx-core lists every block pixels first
    kinds = v["upsample_type"][::-1]
    noise = v["decoder_inject_noise"]
    decoder = []
    for i, (layers, kind, factor, residual) in enumerate(zip(
            v["decoder_layers_per_block"], kinds, v["upsample_factor"], v["upsample_residual"],
            strict=False)):
        decoder += [["res_x", {"num_layers": layers, "inject_noise": noise[i]}],
                    [f"compress_{_SAMPLING[kind]}", {"multiplier": factor, "residual": residual}]]
    decoder.append(["res_x", {"num_layers": v["decoder_layers_per_block"][-1],
                              "inject_noise": noise[-1]}])
    encoder_padding, decoder_padding = (v["encoder_spatial_padding_mode"],
                                        v["decoder_spatial_padding_mode"])
    # ltx-core's encoder reads `spatial_padding_mode` before its own key, and its decoder
    # takes reflect without it: a decoder padded otherwise than the encoder must be reflect
    if encoder_padding != decoder_padding and decoder_padding != "reflect":
        raise ValueError(f"ltx-core cannot pad the encoder with {encoder_padding} and the "
                         f"decoder with {decoder_padding}")
    padding = {"spatial_padding_mode": decoder_padding} if (
        encoder_padding == decoder_padding) else {}
    return {
        "_class_name": "CausalVideoAutoencoder", "dims": 3,
        "in_channels": v["in_channels"], "out_channels": v["out_channels"],
        "latent_channels": v["latent_channels"], "patch_size": v["patch_size"],
        "encoder_blocks": encoder, "decoder_blocks": decoder,
        "decoder_base_channels": v["decoder_block_out_channels"][0] // v["upsample_factor"][0],
        "norm_layer": "pixel_norm", "latent_log_var": "uniform",
        "causal_decoder": v["decoder_causal"],
        "timestep_conditioning": v["timestep_conditioning"],
        "encoder_spatial_padding_mode": encoder_padding, **padding,
    }


def _audio_vae_config(a: dict[str, Any]) -> dict[str, Any]:
    """The audio VAE in the nested form ltx-core reads (`model.params.ddconfig`, the mel
    front end under `preprocessing`)."""
    ddconfig = {
        "ch": a["base_channels"], "out_ch": a["output_channels"], "ch_mult": a["ch_mult"],
        "num_res_blocks": a["num_res_blocks"],
        # ltx-core tests membership in it: diffusers' None (no attention) is an empty list
        "attn_resolutions": list(a["attn_resolutions"] or []),
        "resolution": a["resolution"], "z_channels": a["latent_channels"],
        "in_channels": a["in_channels"], "double_z": a["double_z"],
        "norm_type": a["norm_type"], "causality_axis": a["causality_axis"],
        "dropout": a["dropout"], "mid_block_add_attention": a["mid_block_add_attention"],
        "mel_bins": a["mel_bins"], "resamp_with_conv": True, "attn_type": "vanilla",
    }
    return {"model": {"params": {"ddconfig": ddconfig, "sampling_rate": a["sample_rate"]}},
            "preprocessing": {"stft": {"hop_length": a["mel_hop_length"],
                                       "causal": a["is_causal"]},
                              "mel": {"n_mel_channels": a["mel_bins"]}}}


def _vocoder_part(v: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {
        "resblock_kernel_sizes": v[f"{prefix}resnet_kernel_sizes"],
        "resblock_dilation_sizes": v[f"{prefix}resnet_dilations"],
        "upsample_rates": v[f"{prefix}upsample_factors"],
        "upsample_kernel_sizes": v[f"{prefix}upsample_kernel_sizes"],
        "upsample_initial_channel": v[f"{prefix}hidden_channels"],
        "resblock": "AMP1" if v[f"{prefix}act_fn"] == "snakebeta" else "1",
        "activation": "snakebeta" if v[f"{prefix}act_fn"] == "snakebeta" else "snake",
        "stereo": v[f"{prefix}out_channels"] == 2,
        "use_tanh_at_final": v[f"{prefix}final_act_fn"] == "tanh",
        "use_bias_at_final": v[f"{prefix}final_bias"],
    }


def _vocoder_config(v: dict[str, Any]) -> dict[str, Any]:
    """The vocoder: flat for LTX-2.0's; LTX-2.3's 16 kHz vocoder and its bandwidth
    extension to 48 kHz nested under `vocoder` and `bwe`, as ltx-core tells them apart."""
    if "bwe_hidden_channels" not in v:
        return {**_vocoder_part(v), "output_sampling_rate": v["output_sampling_rate"]}
    return {"vocoder": {**_vocoder_part(v), "output_sampling_rate": v["input_sampling_rate"]},
            "bwe": {**_vocoder_part(v, "bwe_"), "input_sampling_rate": v["input_sampling_rate"],
                    "output_sampling_rate": v["output_sampling_rate"],
                    "n_fft": v["filter_length"], "hop_length": v["hop_length"],
                    "num_mels": v["num_mel_channels"]}}


class CheckpointError(InvalidInput):
    """The checkpoint or its Gemma folder cannot give the model that is asked for."""


def _rename(key: str, names: dict[str, str]) -> str:
    return ".".join(names.get(part, part) for part in key.split("."))


def _inverse(names: dict[str, str]) -> dict[str, str]:
    return {original: name for name, original in names.items()}


# -- diffusers names → original names (writing; and the expected keys of a file) --------

def _vae_original(key: str, down_blocks: int) -> str:
    """`encoder.down_blocks.{i}` / `.downsamplers.0` / `mid_block` are one flat list in
    the original (stage i's resnets at 2i, its downsampler at 2i+1, the mid block last);
    the decoder's is mid block first, then each stage's upsampler and resnets."""
    rules = (
        (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda i: 2 * i + 1),
        (r"^encoder\.down_blocks\.(\d+)\.", lambda i: 2 * i),
        (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda i: 2 * i + 1),
        (r"^decoder\.up_blocks\.(\d+)\.", lambda i: 2 * i + 2),
    )
    for pattern, index in rules:
        if match := re.match(pattern, key):
            stack = "encoder.down_blocks" if key.startswith("encoder") else "decoder.up_blocks"
            key = f"{stack}.{index(int(match.group(1)))}.{key[match.end():]}"
            break
    else:
        key = re.sub(r"^encoder\.mid_block\.", f"encoder.down_blocks.{2 * down_blocks}.", key)
        key = re.sub(r"^decoder\.mid_block\.", "decoder.up_blocks.0.", key)
    return _rename(key, {"resnets": "res_blocks"})


def transformer_key(key: str) -> str:
    """A transformer parameter's original name, without the file's prefix: the rename
    table that the single file and the LoRA file (`lora.lora_key`) share."""
    return _rename(key, _TRANSFORMER_NAMES)


def original_key(component: str, key: str, shapes: ModelShapes) -> str:
    """The original (single-file) name of a diffusers parameter or buffer."""
    if component == "transformer":
        return TRANSFORMER_PREFIX + transformer_key(key)
    if component == "connectors":
        prefix = TRANSFORMER_PREFIX if key.split(".")[0].endswith("_connector") else (
            PROJECTION_PREFIX)
        return prefix + _rename(key, _CONNECTOR_NAMES)
    if key in _STATISTICS:
        return PREFIXES[component] + _STATISTICS[key]
    if component == "vae":
        down_blocks = len(shapes.configs["vae"]["block_out_channels"])
        return PREFIXES[component] + _vae_original(key, down_blocks)
    if component == "vocoder":
        key = re.sub(r"\.downsample\.filter$", ".downsample.lowpass.filter", key)
        return PREFIXES[component] + _rename(key, _VOCODER_NAMES)
    return PREFIXES[component] + key


def to_original(component: str, state_dict: dict[str, torch.Tensor], shapes: ModelShapes
                ) -> dict[str, torch.Tensor]:
    return {original_key(component, k, shapes): v for k, v in state_dict.items()}


def expected_keys(shapes: ModelShapes) -> dict[str, dict[str, tuple[int, ...]]]:
    """component → {original key: shape} of every weight the file must hold (from the
    components built on the meta device: no memory)."""
    expected = {}
    for name in COMPONENTS[:-1]:  # the text encoder is Gemma's own folder
        state = build_meta(shapes, name).state_dict()
        expected[name] = {original_key(name, k, shapes): tuple(v.shape) for k, v in state.items()}
    return expected


# -- original names → diffusers names (reading, where diffusers has no table) -----------

def _vae_diffusers(key: str, down_blocks: int) -> str:
    """The inverse of `_vae_original`."""
    if match := re.match(r"^(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.", key):
        index, rest = int(match.group(2)), key[match.end():]
        if match.group(1).startswith("encoder"):
            stage = ("mid_block." if index == 2 * down_blocks else
                     f"down_blocks.{(index - 1) // 2}.downsamplers.0." if index % 2 else
                     f"down_blocks.{index // 2}.")
            key = f"encoder.{stage}{rest}"
        else:
            stage = ("mid_block." if index == 0 else
                     f"up_blocks.{(index - 1) // 2}.upsamplers.0." if index % 2 else
                     f"up_blocks.{(index - 2) // 2}.")
            key = f"decoder.{stage}{rest}"
    return _rename(key, {"res_blocks": "resnets"})


def _vae_state(original: dict[str, torch.Tensor], shapes: ModelShapes
               ) -> dict[str, torch.Tensor]:
    statistics = _inverse(_STATISTICS)
    down_blocks = len(shapes.configs["vae"]["block_out_channels"])
    state = {}
    for key, value in original.items():
        key = key.removeprefix(PREFIXES["vae"])
        state[statistics.get(key) or _vae_diffusers(key, down_blocks)] = value
    return state


def _connectors_state(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = _inverse(_CONNECTOR_NAMES)
    return {_rename(k.removeprefix(TRANSFORMER_PREFIX).removeprefix(PROJECTION_PREFIX), names): v
            for k, v in original.items()}


def _vocoder_state(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = _inverse(_VOCODER_NAMES)
    state = {}
    for key, value in original.items():
        key = _rename(key.removeprefix(PREFIXES["vocoder"]), names)
        state[re.sub(r"\.downsample\.lowpass\.filter$", ".downsample.filter", key)] = value
    return state


# -- what was given ---------------------------------------------------------------------

@dataclass(frozen=True)
class SingleFileModel:
    """An official checkpoint and a Gemma-3 folder, checked to give `shapes`' model."""

    checkpoint: Path
    text_encoder_dir: Path
    shapes: ModelShapes
    keys: dict[str, list[str]]  # component → its original keys in the file

    @property
    def version(self) -> str:
        return self.shapes.version

    @property
    def name(self) -> str:
        """The checkpoint's file name: what a LoRA's config records as its base model."""
        return self.checkpoint.name

    @property
    def profile(self) -> ModelProfile:
        """The profile of the configs the files were checked against."""
        return profile_from_shapes(self.shapes)

    def load(self, name: str, device: torch.device, dtype: torch.dtype | None = None) -> Any:
        """One component, in eval mode and frozen, on `device` (`loader.Model.load`)."""
        from .device import compute_dtype

        dtype = dtype or compute_dtype(device)
        if name == "tokenizer":
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.text_encoder_dir)
        if name == "scheduler":
            from diffusers import FlowMatchEulerDiscreteScheduler

            from .shapes import SCHEDULER

            return FlowMatchEulerDiscreteScheduler.from_config(
                self.shapes.configs.get("scheduler", SCHEDULER))
        if name == "text_encoder":  # transformers keeps its rotary tables in fp32
            model = component_class(self.shapes, name).from_pretrained(
                self.text_encoder_dir, dtype=dtype).to(device)
        else:
            model = (self._from_single_file(name, device, dtype) if name in ("transformer", "vae")
                     else self._mapped(name, device, dtype))
            if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
                raise CheckpointError(f"{self.checkpoint}: the {name} weights are incomplete")
            model = torch.nn.Module.to(model, device=device, dtype=dtype)
        return model.eval().requires_grad_(False)

    def _read(self, name: str, device: torch.device) -> dict[str, torch.Tensor]:
        """The component's weights, read straight onto `device` (the 19B transformer
        need not pass through CPU memory)."""
        from safetensors import safe_open

        with safe_open(self.checkpoint, framework="pt", device=str(device)) as file:
            return {key: file.get_tensor(key) for key in self.keys[name]}

    def _from_single_file(self, name: str, device: torch.device, dtype: torch.dtype) -> Any:
        original = self._read(name, device)
        if name == "transformer":
            original = {_rename(k, _PROMPT_ADALN): v for k, v in original.items()}
        elif name == "vae":  # handed over in diffusers' names: its table lacks 2.3's decoder
            original = _vae_state(original, self.shapes)
        cls = component_class(self.shapes, name)
        with tempfile.TemporaryDirectory(prefix="ltx-extend-config-") as configs:
            (Path(configs) / name).mkdir()
            config = {"_class_name": cls.__name__, **self.shapes.config(name)}
            (Path(configs) / name / "config.json").write_text(json.dumps(config))
            try:
                model = cls.from_single_file(original, config=configs, subfolder=name,
                                             torch_dtype=dtype, device=device,
                                             local_files_only=True)
            except (ValueError, RuntimeError) as exc:
                raise CheckpointError(f"{self.checkpoint}: the {name} does not load: {exc}"
                                      ) from None
        return model

    def _mapped(self, name: str, device: torch.device, dtype: torch.dtype) -> Any:
        """A component diffusers has no single-file loader for: our key map, loaded into
        the component laid out without memory; its buffers are computed in `dtype`, as
        diffusers' `from_pretrained` computes them."""
        from accelerate import init_empty_weights

        from .shapes import default_dtype, instantiate

        original = self._read(name, device)
        if name == "audio_vae":  # diffusers has the key table but not the loader for it
            from diffusers.loaders.single_file_utils import convert_ltx2_audio_vae_to_diffusers

            state = convert_ltx2_audio_vae_to_diffusers(original)
        else:
            state = (_connectors_state if name == "connectors" else _vocoder_state)(original)
        with init_empty_weights(include_buffers=False), default_dtype(dtype):
            model = instantiate(self.shapes, name)
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.checkpoint}: the {name} does not load: {exc}"
                                  ) from None
        return model


def describe_single_file(checkpoint: Path, text_encoder_dir: Path | None,
                         shapes: ModelShapes | str | None = None) -> SingleFileModel:
    """Check a single-file checkpoint and its Gemma-3 folder against the configs of
    `shapes` (default: those the file names for itself, else LTX-2.3's) from the file's
    header alone; raises CheckpointError naming the file and what is wrong."""
    from safetensors import SafetensorError, safe_open

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint} does not exist or is not a file")
    try:
        with safe_open(checkpoint, framework="pt") as file:
            metadata = file.metadata() or {}
            header = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{checkpoint} is not a safetensors checkpoint: {exc}") from None
    _check_is_ltx2(checkpoint, header)
    if isinstance(shapes, str):
        shapes = shapes_named(shapes)
    elif shapes is None:
        shapes = (ModelShapes.from_json(metadata[SHAPES_METADATA]) if SHAPES_METADATA in metadata
                  else LTX_2_3)
    file_version = "2.3" if f"{TRANSFORMER_PREFIX}prompt_adaln_single.linear.weight" in header \
        else "2.0"
    if file_version != shapes.version:
        raise CheckpointError(
            f"{checkpoint} is an LTX-{file_version} checkpoint, but the LTX-{shapes.version} "
            f"configs ({shapes.name}) are expected: give the LTX-{shapes.version} release "
            f"(e.g. ltx-2.3-22b-dev.safetensors) or the LTX-{file_version} configs")
    keys = _check_keys(checkpoint, header, shapes)
    _check_gemma(checkpoint, text_encoder_dir, shapes)
    return SingleFileModel(checkpoint, Path(text_encoder_dir), shapes, keys)


def _check_is_ltx2(checkpoint: Path, header: dict[str, tuple[int, ...]]) -> None:
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES

    if not any(key in header for key in CHECKPOINT_KEY_NAMES["ltx2"]):
        raise CheckpointError(
            f"{checkpoint} is not an LTX-2 checkpoint: it has none of the keys LTX-2's "
            f"single files have (such as {CHECKPOINT_KEY_NAMES['ltx2'][0]})")
    if any(key.endswith((".weight_scale", ".input_scale")) for key in header):
        raise CheckpointError(f"{checkpoint} holds fp8-quantized weights (weight_scale keys): "
                              "give the bf16 checkpoint (ltx-2.3-22b-dev.safetensors)")


def _check_keys(checkpoint: Path, header: dict[str, tuple[int, ...]], shapes: ModelShapes
                ) -> dict[str, list[str]]:
    keys = {}
    for name, expected in expected_keys(shapes).items():
        missing = [k for k in expected if k not in header]
        if missing:
            raise CheckpointError(
                f"{checkpoint} lacks {len(missing)} of the {len(expected)} {name} weights of "
                f"{shapes.name} (first: {missing[0]})")
        wrong = [k for k, shape in expected.items() if header[k] != shape]
        if wrong:
            k = wrong[0]
            raise CheckpointError(
                f"{checkpoint}: {len(wrong)} {name} weights do not have {shapes.name}'s shapes "
                f"({k} is {list(header[k])}, expected {list(expected[k])})")
        keys[name] = list(expected)
    known = {k for names in keys.values() for k in names}
    unknown = [k for k in header if k not in known and not k.endswith(_DROPPED)]
    if unknown:
        log.warning("%s: %d keys belong to no component and are ignored (first: %s)",
                    checkpoint, len(unknown), unknown[0])
    return keys


def _check_gemma(checkpoint: Path, folder: Path | None, shapes: ModelShapes) -> None:
    if folder is None:
        raise CheckpointError(f"{checkpoint} holds no text encoder: give its Gemma-3 folder "
                              "(config.json, the weights and the tokenizer) as well")
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} is not a Gemma-3 folder (no config.json)")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "gemma3":
        raise CheckpointError(f"{folder} holds a {config.get('model_type')!r} model, "
                              "not Gemma-3 (model_type gemma3)")
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder} holds no weights (*.safetensors)")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise CheckpointError(f"{folder} holds no tokenizer (tokenizer.json or tokenizer.model)")
    text = config.get("text_config", {})
    connectors = shapes.configs["connectors"]
    features = (text.get("hidden_size"), text.get("num_hidden_layers", -1) + 1)
    wanted = (connectors["caption_channels"], connectors["text_proj_in_factor"])
    if features != wanted:
        raise CheckpointError(
            f"{folder}: its text features ({features[0]} wide, {features[1]} hidden states) "
            f"are not what {checkpoint.name}'s connectors take ({wanted[0]} wide, "
            f"{wanted[1]} hidden states: Gemma-3-12B for the LTX-2 releases)")

