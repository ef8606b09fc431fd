"""A tiny random LTX-2 model folder in the diffusers layout.

Same classes and folder layout as the real LTX-2.3 release, loaded by the same code,
with tiny widths and depths but the real compression: 8× in time and 32× in space for
video, 16 kHz audio at 25 latents per second. The text encoder is a tiny Gemma 3 and
the tokenizer is built here from a small word list, so nothing is fetched from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = (
    "a an the and of to in on at with from up down left right over under into onto is are "
    "person people man woman child dog cat car door window room street stage crowd square "
    "walks runs opens closes enters leaves approaches turns slides glides moves drifts "
    "crosses falls rises light dark bright blue red green yellow white black soft loud "
    "music applause voice tone slowly quickly camera scene shot frame colour gradient "
    "lead in leadin trigger stagein closing clip video audio sound"
).split()
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
MARKER = "ltx-extend-tiny-model.json"


def _tokenizer(dest: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Lowercase()]
        if hasattr(pre_tokenizers, "Lowercase") else [pre_tokenizers.Whitespace()]
    )
    from tokenizers import normalizers

    core.normalizer = normalizers.Lowercase()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
        unk_token="<unk>", padding_side="left", model_max_length=128,
    )
    tokenizer.save_pretrained(dest)


def build_components(seed: int = 0) -> dict[str, object]:
    """The tiny components, initialised deterministically from `seed`."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    hidden = 32
    torch.manual_seed(seed)
    text_config = {
        "hidden_size": hidden, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "vocab_size": len(SPECIAL) + len(WORDS), "max_position_embeddings": 256,
        "sliding_window": 64, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
    }
    vision_config = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=text_config, vision_config=vision_config, mm_tokens_per_image=4,
        boi_token_index=3, eoi_token_index=3, image_token_index=3))
    torch.manual_seed(seed + 1)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
        num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2,
        caption_channels=hidden, rope_double_precision=False, rope_type="split",
        vae_scale_factors=(8, 32, 32), perturbed_attn=True,  # STG, as in LTX-2.3
    )
    torch.manual_seed(seed + 2)
    connectors = LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=text_config["num_hidden_layers"] + 1,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_theta=10000.0, rope_double_precision=False,
        causal_temporal_positioning=False, rope_type="split",
    )
    torch.manual_seed(seed + 3)
    # Four down blocks as in the real VAE: 8× in time, 32× in space (patch 4 × 2 × 2 × 2).
    vae = AutoencoderKLLTX2Video(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )
    torch.manual_seed(seed + 4)
    audio_vae = AutoencoderKLLTX2Audio(
        # base_channels = latent_channels × mel_bins / 4: the packed audio token width,
        # which the latent statistics are kept for (128 = 8 × 64 / 4 in the real model)
        base_channels=8, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1,
        attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2,
        norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True,
        mel_bins=16,
    )
    torch.manual_seed(seed + 5)
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins,
        hidden_channels=32, out_channels=2, upsample_kernel_sizes=[20, 16],
        upsample_factors=[10, 16], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
    )
    return {
        "transformer": transformer, "vae": vae, "audio_vae": audio_vae,
        "connectors": connectors, "text_encoder": text_encoder, "vocoder": vocoder,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift_terminal=None),
    }


def write_tiny_model(dest: Path, seed: int = 0) -> Path:
    """Write the tiny model folder (model_index.json and one folder per component)."""
    from diffusers import LTX2Pipeline

    dest.mkdir(parents=True, exist_ok=True)
    components = build_components(seed)
    tokenizer_dir = dest / "tokenizer"
    _tokenizer(tokenizer_dir)
    from transformers import AutoTokenizer

    pipe = LTX2Pipeline(tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir), **components)
    pipe.save_pretrained(dest, safe_serialization=True)
    (dest / MARKER).write_text(json.dumps({"seed": seed, "kind": "tiny-random"}))
    return dest


def is_tiny_model(path: Path) -> bool:
    return (path / MARKER).is_file()
