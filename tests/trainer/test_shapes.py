"""LTX-2.3 at its real shapes: the full 22B on the meta device (parameter counts, LoRA
targets, LoRA size per rank), the one-block model at the real widths, the maker's CLI."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from ltx_trainer.commands import tiny_model
from ltx_trainer.model import writer
from ltx_trainer.model.adapter import MODALITIES, add_lora, lora_targets
from ltx_trainer.model.shapes import (
    LTX_2_3,
    build_component,
    build_meta,
    parameter_count,
    real_shapes,
)

#: every attention projection: the targets of a training with audio
LORA_TARGETS = lora_targets(MODALITIES)

#: LTX-2.3's parameter counts, from the release configs (diffusers' LTX-2.3 classes)
TRANSFORMER_PARAMS = 18_988_838_144
CONNECTOR_PARAMS = 3_172_227_584
#: every block's video, audio and cross-modal attentions × q, k, v, out
LORA_MODULES_PER_BLOCK = 6 * 4


@pytest.fixture(scope="module")
def transformer() -> torch.nn.Module:
    return build_meta(LTX_2_3, "transformer")


def test_the_22b_model_on_the_meta_device(transformer: torch.nn.Module) -> None:
    connectors = build_meta(LTX_2_3, "connectors")
    for model in (transformer, connectors):
        assert all(p.is_meta for p in model.parameters())  # no memory behind them
    assert parameter_count(transformer) == TRANSFORMER_PARAMS  # ≈19.0 B
    assert parameter_count(connectors) == CONNECTOR_PARAMS  # ≈3.2 B: 22.2 B with them
    c = transformer.config
    assert (len(transformer.transformer_blocks), c.num_attention_heads * c.attention_head_dim,
            c.num_attention_heads, c.audio_num_attention_heads * c.audio_attention_head_dim,
            c.caption_channels) == (48, 4096, 32, 2048, 3840)
    assert c.gated_attn and c.cross_attn_mod and c.perturbed_attn and not c.use_prompt_embeddings
    assert not hasattr(transformer, "caption_projection")  # 2.3 projects in the connectors
    # the connectors' per-modality input projections take all 49 Gemma hidden states
    assert (connectors.video_text_proj_in.in_features, connectors.video_text_proj_in.out_features,
            connectors.audio_text_proj_in.out_features) == (3840 * 49, 4096, 2048)
    assert len(connectors.video_connector.transformer_blocks) == 8


def test_every_lora_target_exists(transformer: torch.nn.Module) -> None:
    targets = {name: m for name, m in transformer.named_modules()
               if re.fullmatch(LORA_TARGETS, name)}
    assert len(targets) == 48 * LORA_MODULES_PER_BLOCK
    assert all(isinstance(m, torch.nn.Linear) for m in targets.values())
    for kind in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn",
                 "video_to_audio_attn"):
        for projection in ("to_q", "to_k", "to_v", "to_out.0"):
            assert all(f"transformer_blocks.{i}.{kind}.{projection}" in targets
                       for i in range(48)), (kind, projection)


#: LoRA parameters of the 22B transformer per rank, in millions (A: rank × in, B: out × rank)
LORA_MILLIONS = {8: 53.5, 16: 107.0, 32: 213.9, 64: 427.8, 128: 855.6}


def test_lora_parameters_per_rank() -> None:
    model = build_meta(LTX_2_3, "transformer")
    widths = sum(m.in_features + m.out_features for name, m in model.named_modules()
                 if re.fullmatch(LORA_TARGETS, name))
    with torch.device("meta"):  # the adapter's layers too
        add_lora(model, 8, MODALITIES)
    assert all(p.is_meta for p in model.parameters())
    lora = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert lora == 8 * widths  # the trainer's adapter: rank × (in + out) on every target
    assert {rank: round(rank * widths / 1e6, 1) for rank in LORA_MILLIONS} == LORA_MILLIONS


def test_one_block_keeps_every_width() -> None:
    """Cut to one block / layer, nothing else changes: the real widths, heads, channels."""
    cut = real_shapes()
    depth = {"transformer": {"num_layers"},
             "connectors": {"video_connector_num_layers", "audio_connector_num_layers",
                            "text_proj_in_factor"},
             "vae": {"layers_per_block", "decoder_layers_per_block"},
             "audio_vae": {"num_res_blocks"},
             "vocoder": {"resnet_kernel_sizes", "resnet_dilations", "bwe_resnet_kernel_sizes",
                         "bwe_resnet_dilations"},
             "text_encoder": {"text_config", "vision_config", "boi_token_index",
                              "eoi_token_index", "image_token_index"}}
    for name, changed in depth.items():
        release, ours = LTX_2_3.configs[name], cut.configs[name]
        assert {k for k in release if release[k] != ours[k]} == changed, name
    text = cut.configs["text_encoder"]["text_config"]
    release_text = LTX_2_3.configs["text_encoder"]["text_config"]
    assert {k for k in release_text if release_text[k] != text[k]} == {"num_hidden_layers",
                                                                       "vocab_size"}
    assert cut.configs["connectors"]["text_proj_in_factor"] == text["num_hidden_layers"] + 1 == 2
    assert cut.version == LTX_2_3.version == "2.3"


def test_components_are_built_on_any_device_from_a_seed() -> None:
    on_meta = build_component(LTX_2_3, "transformer", device="meta")  # the full 19 B
    assert all(p.is_meta and p.dtype == torch.bfloat16 for p in on_meta.parameters())
    cut = real_shapes()
    first, again = (build_component(cut, "audio_vae", seed=3) for _ in range(2))
    other = build_component(cut, "audio_vae", seed=4)
    weights = first.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in again.state_dict().items())
    assert not all(torch.equal(weights[k], v) for k, v in other.state_dict().items())
    convolution = first.encoder.conv_in.conv.weight
    assert convolution.dtype == torch.bfloat16 and 0 < convolution.float().std() < 1
    assert not first.training and not any(p.requires_grad for p in first.parameters())


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tiny_model.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_cli_writes_the_single_file_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ltx_trainer.model.single_file import GEMMA_DIR, describe_single_file

    args = _cli("tiny-model", str(tmp_path), "--shapes", "ltx-2.3", "--layout", "single-file")
    assert args.func(args) == 0
    checkpoint = tmp_path / "ltx-2.3-1-block.safetensors"
    assert str(checkpoint) in capsys.readouterr().out
    files = describe_single_file(checkpoint, tmp_path / GEMMA_DIR)  # the release's key names
    assert files.version == "2.3" and files.shapes.configs["transformer"]["num_layers"] == 1
    assert "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight" in \
        files.keys["transformer"]
    marker = json.loads((tmp_path / writer.MARKER).read_text())
    assert marker == {"shapes": "ltx-2.3-1-block", "layout": "single-file", "seed": 0,
                      "kind": "real-shapes-random"}


def test_cli_tiny_model_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = _cli("tiny-model", str(tmp_path / "tiny"))
    assert args.func(args) == 0
    assert (tmp_path / "tiny" / "model_index.json").is_file()
    args = _cli("tiny-model", str(tmp_path / "x"), "--layout", "single-file")
    assert args.func(args) == 3
    assert "--layout needs --shapes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli("tiny-model", str(tmp_path), "--shapes", "ltx-9")


def test_ltx25_on_the_meta_device() -> None:
    from ltx_trainer.model.profile import profile_from_shapes
    from ltx_trainer.model.shapes import LTX_2_5

    transformer = build_meta(LTX_2_5, "transformer")
    # 2.3's widths less the video feed-forward biases and the prompt-modulation MLPs, plus
    # the keyframe position embedding
    assert parameter_count(transformer) == 18_923_347_200
    assert transformer.transformer_blocks[0].ff.net[0].proj.bias is None
    assert not hasattr(transformer, "prompt_adaln")
    assert transformer.keyframes_abs_pos_embedding.shape == (1, 4096)
    targets = [n for n, _ in transformer.named_modules() if re.fullmatch(LORA_TARGETS, n)]
    assert len(targets) == 48 * LORA_MODULES_PER_BLOCK  # the same LoRA as 2.3's
    assert parameter_count(build_meta(LTX_2_5, "diffusion_decoder")) == 417_133_616
    assert type(build_meta(LTX_2_5, "text_encoder")).__name__ == \
        "Gemma4UnifiedForConditionalGeneration"
    profile = profile_from_shapes(LTX_2_5)
    assert (LTX_2_5.version, profile.name, profile.text_encoder, profile.text_features,
            profile.decoders) == ("2.5", "ltx-2.5", "gemma4_unified", (3840, 49),
                                  ("convolutional", "diffusion"))
    cut = real_shapes("ltx-2.5")
    assert cut.version == "2.5" and cut.components[-2:] == ("diffusion_decoder", "text_encoder")
    assert cut.configs["diffusion_decoder"]["decoder_stage_depths"] == [1] * 5
