"""A tiny random LTX-2 model folder in the diffusers layout.

Same classes and folder layout as the real releases, loaded by the same code, with tiny
widths and depths but the real compression: 8× in time and 32× in space for video,
16 kHz audio at 25 latents per second. `version` picks the LTX-2.0 or the LTX-2.3 form:
2.3 switches on gated attention, prompt modulation by sigma (`cross_attn_mod` and its
audio twin), per-modality connector projections instead of the transformer's caption
projection, and the bandwidth-extending vocoder (16 → 48 kHz). 2.5 is 2.3 without the video
feed-forward biases, with the static prompt modulation table, the keyframe embedding, a
Gemma 4 text encoder and a diffusion video decoder beside the convolutional one. The text
encoder is a tiny Gemma 3 (Gemma 4 for 2.5) and the tokenizer is built here from a small
word list, so nothing is fetched from a hub.
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
#: bumped when the tiny model's form changes (2: the LTX-2 dynamic-shift scheduler and the
#: version option), so a cached older folder can be told apart and written again
FORMAT = 2
DIFFUSION_DECODER = "diffusion_decoder"


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


VERSIONS = ("2.0", "2.3", "2.5")


def build_components(seed: int = 0, version: str = "2.0") -> dict[str, object]:
    """The tiny components of an LTX-`version` model, initialised deterministically from
    `seed`."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, not {version!r}")
    v23 = version in ("2.3", "2.5")  # 2.5 keeps 2.3's call
    v25 = version == "2.5"
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
    if v25:
        text_encoder = _gemma_4(text_config)
    else:
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
        vae_scale_factors=(8, 32, 32), perturbed_attn=True,  # the STG blocks
        gated_attn=v23, cross_attn_mod=v23, audio_gated_attn=v23, audio_cross_attn_mod=v23,
        use_prompt_embeddings=not v23,
        ff_bias=not v25, use_prompt_adaln_single=not v25, use_keyframes_abs_pos_embedding=v25,
    )
    torch.manual_seed(seed + 2)
    # 2.0: one projection to the caption width, the transformer projects per modality;
    # 2.3: the connectors project straight to each stream's width (16 video, 8 audio)
    video_width, audio_width = (16, 8) if v23 else (hidden, hidden)
    head_dim = 4 if v23 else 8
    connectors = LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=text_config["num_hidden_layers"] + 1,
        video_connector_num_attention_heads=video_width // head_dim,
        video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=audio_width // head_dim,
        audio_connector_attention_head_dim=head_dim,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_theta=10000.0, rope_double_precision=False,
        causal_temporal_positioning=False, rope_type="split",
        per_modality_projections=v23, video_hidden_dim=video_width, audio_hidden_dim=audio_width,
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
    mel_channels = audio_vae.config.output_channels * audio_vae.config.mel_bins
    vocoder = _bwe_vocoder(mel_channels) if v23 else _vocoder(mel_channels)
    # the LTX-2 schedule: resolution-dependent (dynamic) shift with the release's constants
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=None)
    components = {
        "transformer": transformer, "vae": vae, "audio_vae": audio_vae,
        "connectors": connectors, "text_encoder": text_encoder, "vocoder": vocoder,
        "scheduler": scheduler,
    }
    if v25:
        torch.manual_seed(seed + 6)
        components[DIFFUSION_DECODER] = _diffusion_decoder(vae)
    return components


def _gemma_4(text_config: dict) -> torch.nn.Module:
    """LTX-2.5's text encoder form: Gemma 4, text only."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    text = {k: v for k, v in text_config.items() if k != "max_position_embeddings"}
    return Gemma4UnifiedForConditionalGeneration(Gemma4UnifiedConfig(
        text_config={**text, "global_head_dim": text["head_dim"]}, vision_config=None,
        audio_config=None, **dict.fromkeys(GEMMA_4_SPECIAL_TOKENS, 3)))


#: Gemma 4's image/video/audio marker tokens (pointed at <unk>: the tiny vocabulary has none)
GEMMA_4_SPECIAL_TOKENS = ("boi_token_id", "eoi_token_id", "image_token_id", "video_token_id",
                          "boa_token_id", "eoa_token_index", "audio_token_id")


def _diffusion_decoder(vae: torch.nn.Module) -> torch.nn.Module:
    """LTX-2.5's diffusion decoder at tiny widths, with the real 8× / 32× upsampling and the
    VAE's latent statistics."""
    from diffusers import LTX2VideoDiffusionDecoderModel

    decoder = LTX2VideoDiffusionDecoderModel(
        latent_channels=vae.config.latent_channels, decoder_head_dim=8,
        decoder_stage_channels=(64, 32, 16, 16, 8), decoder_stage_depths=(1, 1, 1, 1, 1),
        decoder_stage_kernels=((3, 3, 3),) * 4, decoder_stage5_kernel=(3, 3, 3),
        decoder_t_emb_dim=16)
    decoder.latents_mean.copy_(vae.latents_mean)
    decoder.latents_std.copy_(vae.latents_std)
    return decoder


def _vocoder(in_channels: int) -> torch.nn.Module:
    """LTX-2.0's vocoder: mel at 100 frames/s → 16 kHz (160× upsampling)."""
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return LTX2Vocoder(
        in_channels=in_channels, hidden_channels=32, out_channels=2,
        upsample_kernel_sizes=[20, 16], upsample_factors=[10, 16], resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
    )


def _bwe_vocoder(in_channels: int) -> torch.nn.Module:
    """LTX-2.3's vocoder: the 16 kHz vocoder, then a bandwidth extender to 48 kHz that reads
    a causal mel (hop 80) of the first stage's output (80 × 3 = 240× upsampling)."""
    import numpy as np
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
    from transformers.audio_utils import mel_filter_bank

    mel_bins, filter_length = 16, 512
    vocoder = LTX2VocoderWithBWE(
        in_channels=in_channels, hidden_channels=32, out_channels=2,
        upsample_kernel_sizes=[20, 16], upsample_factors=[10, 16], resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]], bwe_in_channels=2 * mel_bins, bwe_hidden_channels=16,
        bwe_out_channels=2, bwe_upsample_kernel_sizes=[12, 11, 16], bwe_upsample_factors=[6, 5, 8],
        bwe_resnet_kernel_sizes=[3], bwe_resnet_dilations=[[1, 3, 5]],
        filter_length=filter_length, hop_length=80, window_length=filter_length,
        num_mel_channels=mel_bins, input_sampling_rate=16000, output_sampling_rate=48000,
    )
    # the STFT and mel buffers are data, not weights (zeros at init): a Hann-windowed DFT
    # and Slaney mel filters, so the extender sees a real spectrogram
    freqs = filter_length // 2 + 1
    n = np.arange(filter_length)
    window = np.hanning(filter_length)
    angles = 2 * np.pi * np.outer(np.arange(freqs), n) / filter_length
    basis = np.concatenate([np.cos(angles), -np.sin(angles)]) * window
    stft = vocoder.mel_stft.stft_fn
    stft.forward_basis.copy_(torch.from_numpy(basis[:, None, :]).float())
    stft.inverse_basis.copy_(torch.from_numpy(basis[:, None, :]).float())
    bank = mel_filter_bank(num_frequency_bins=freqs, num_mel_filters=mel_bins, min_frequency=0.0,
                           max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                           mel_scale="slaney")
    vocoder.mel_stft.mel_basis.copy_(torch.from_numpy(np.asarray(bank).T).float())
    return vocoder


def write_tiny_model(dest: Path, seed: int = 0, version: str = "2.0") -> Path:
    """Write the tiny LTX-`version` model folder (model_index.json and one folder per
    component)."""
    from diffusers import LTX2Pipeline

    dest.mkdir(parents=True, exist_ok=True)
    components = build_components(seed, version)
    decoder = components.pop(DIFFUSION_DECODER, None)
    tokenizer_dir = dest / "tokenizer"
    _tokenizer(tokenizer_dir)
    from transformers import AutoTokenizer

    pipe = LTX2Pipeline(tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir), **components)
    pipe.save_pretrained(dest, safe_serialization=True)
    if decoder is not None:  # not an LTX2Pipeline component: listed beside them, as diffusers does
        decoder.save_pretrained(dest / DIFFUSION_DECODER)
        index = json.loads((dest / "model_index.json").read_text())
        index[DIFFUSION_DECODER] = ["diffusers", type(decoder).__name__]
        (dest / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    (dest / MARKER).write_text(json.dumps({"seed": seed, "kind": "tiny-random",
                                            "version": version, "format": FORMAT}))
    return dest


def is_tiny_model(path: Path) -> bool:
    return (path / MARKER).is_file()


def is_current_tiny_model(path: Path) -> bool:
    """A tiny model folder written by this version of the maker (an older one, e.g. with a
    fixed-shift scheduler that training now refuses, should be written again)."""
    if not is_tiny_model(path):
        return False
    return json.loads((path / MARKER).read_text()).get("format") == FORMAT
