"""The official single-file checkpoint + Gemma-3 folder: every component loads and equals
the diffusers-layout component of the same weights, at LTX-2.3's real widths; what
cannot give the model asked for is refused from the header, naming the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import RealShapeModels
from safetensors.torch import load_file, save_file

from ltx_trainer.model.loader import load_component
from ltx_trainer.model.shapes import LTX_2_0, LTX_2_3, ModelShapes, build_meta
from ltx_trainer.model.single_file import (
    GEMMA_DIR,
    CheckpointError,
    describe_single_file,
    original_key,
)
from ltx_trainer.model.writer import write_layouts

CPU = torch.device("cpu")


def _diffusers_component(folder: Path, name: str) -> torch.nn.Module:
    if name == "vocoder":  # load_component takes every vocoder for 2.0's class
        from ltx_trainer.model.shapes import component_class

        cls = component_class(ModelShapes.from_folder(folder), name)
        return cls.from_pretrained(folder / name, torch_dtype=torch.bfloat16).eval()
    return load_component(folder, name, CPU, torch.bfloat16)


def _metadata(checkpoint: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(checkpoint, framework="pt") as file:
        return file.metadata()


def _keys(checkpoint: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(checkpoint, framework="pt") as file:
        return set(file.keys())


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(
        sa[k], sb[k])][:3]


def _run(name: str, model: torch.nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """The component on a small input (same generator state → same input)."""
    dtype = next(model.parameters()).dtype

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(dtype)

    with torch.no_grad():
        if name == "transformer":
            frames, height, width, audio, text = 1, 2, 2, 4, 128
            c = model.config
            out = model(
                hidden_states=randn(1, frames * height * width, c.in_channels),
                audio_hidden_states=randn(1, audio, c.audio_in_channels),
                encoder_hidden_states=randn(1, text, c.cross_attention_dim),
                audio_encoder_hidden_states=randn(1, text, c.audio_cross_attention_dim),
                timestep=torch.full((1, frames * height * width), 500.0),
                audio_timestep=torch.full((1, audio), 500.0), sigma=torch.tensor([500.0]),
                encoder_attention_mask=torch.ones(1, text, dtype=torch.long),
                audio_encoder_attention_mask=torch.ones(1, text, dtype=torch.long),
                num_frames=frames, height=height, width=width, fps=24.0, audio_num_frames=audio,
                video_coords=model.rope.prepare_video_coords(1, frames, height, width, CPU,
                                                             fps=24.0),
                audio_coords=model.audio_rope.prepare_audio_coords(1, audio, CPU),
                use_cross_timestep=True, return_dict=False)
            return list(out)
        if name == "connectors":
            c = model.config
            mask = torch.ones(1, 128, dtype=torch.long)
            mask[:, :100] = 0  # left padding, replaced by the learnable registers
            return list(model(randn(1, 128, c.caption_channels * c.text_proj_in_factor), mask))
        if name == "vae":
            latents = model.encode(randn(1, 3, 9, 32, 32)).latent_dist.mode()
            return [latents, model.decode(latents).sample]
        if name == "audio_vae":
            return [model.decode(randn(1, 8, 2, 16)).sample]
        if name == "vocoder":
            return [model(randn(1, 2, 4, 64))]
        ids = torch.randint(0, model.config.text_config.vocab_size, (1, 6), generator=generator)
        return list(model(input_ids=ids, output_hidden_states=True).hidden_states)


@pytest.fixture(scope="module")
def real(real_shape_models: RealShapeModels) -> RealShapeModels:
    return real_shape_models


def test_describe_reads_the_header_only(real: RealShapeModels) -> None:
    files = describe_single_file(real.checkpoint, real.gemma)
    assert files.version == "2.3"
    assert files.shapes.name == "ltx-2.3-1-block"  # the file names its own (cut) shapes
    assert files.shapes.configs["transformer"]["num_layers"] == 1
    # every weight of the file belongs to exactly one component
    in_file = _keys(real.checkpoint)
    claimed = [k for keys in files.keys.values() for k in keys]
    assert len(claimed) == len(set(claimed)) and set(claimed) == in_file
    assert {"transformer", "connectors", "vae", "audio_vae", "vocoder"} == files.keys.keys()


@pytest.mark.parametrize("name", ["transformer", "connectors", "vae", "audio_vae", "vocoder",
                                  "text_encoder"])
def test_component_equals_the_diffusers_layout(real: RealShapeModels, name: str) -> None:
    from_single = describe_single_file(real.checkpoint, real.gemma).load(name, CPU,
                                                                         torch.bfloat16)
    from_folder = _diffusers_component(real.diffusers, name)
    assert type(from_single) is type(from_folder)
    assert not from_single.training and not any(p.requires_grad
                                                for p in from_single.parameters())
    assert next(from_single.parameters()).dtype == torch.bfloat16
    _same_weights(from_single, from_folder)
    out_single = _run(name, from_single, torch.Generator().manual_seed(0))
    out_folder = _run(name, from_folder, torch.Generator().manual_seed(0))
    assert len(out_single) == len(out_folder) > 0
    for a, b in zip(out_single, out_folder, strict=True):
        assert torch.isfinite(a.float()).all()
        assert torch.equal(a, b)


def test_tokenizer_and_scheduler(real: RealShapeModels) -> None:
    files = describe_single_file(real.checkpoint, real.gemma)
    tokenizer = files.load("tokenizer", CPU)
    reference = load_component(real.diffusers, "tokenizer", CPU)
    assert tokenizer("a dog walks in").input_ids == reference("a dog walks in").input_ids
    scheduler = files.load("scheduler", CPU)

    def public(config: dict) -> dict:
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(scheduler.config) == public(load_component(real.diffusers, "scheduler",
                                                             CPU).config)
    assert scheduler.config.use_dynamic_shifting and scheduler.config.shift_terminal == 0.1


def test_original_names_agree_with_diffusers_tables() -> None:
    """Our original names, through diffusers' own single-file key tables, give back the
    diffusers names wherever diffusers has a table: the whole LTX-2.0 VAE, the LTX-2.3
    transformer (its prompt modulation renamed first) and the audio VAE."""
    from diffusers.loaders import single_file_utils as sfu

    def through(convert, shapes: ModelShapes, name: str, rename=lambda k: k) -> None:
        keys = build_meta(shapes, name).state_dict().keys()
        converted = convert({rename(original_key(name, k, shapes)): k for k in keys})
        assert converted == {k: k for k in keys}

    through(sfu.convert_ltx2_vae_to_diffusers, LTX_2_0, "vae")
    through(sfu.convert_ltx2_audio_vae_to_diffusers, LTX_2_3, "audio_vae")
    through(sfu.convert_ltx2_transformer_to_diffusers, LTX_2_3.cut_depth(), "transformer",
            lambda k: k.replace("prompt_adaln_single", "prompt_adaln"))
    through(sfu.convert_ltx2_transformer_to_diffusers, LTX_2_0.cut_depth(), "transformer")


# -- refusals ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_2_0(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny (LTX-2.0-style) model's shapes in both layouts, the same random weights."""
    root = tmp_path_factory.mktemp("tiny-layouts")
    return write_layouts({"diffusers": root / "diffusers", "single-file": root / "single"},
                         ModelShapes.from_folder(tiny_model))


def test_a_2_0_file_loads_with_its_configs(tiny_2_0: dict[str, Path]) -> None:
    checkpoint = tiny_2_0["single-file"]
    files = describe_single_file(checkpoint, checkpoint.parent / GEMMA_DIR)
    assert files.version == "2.0"
    for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
        _same_weights(files.load(name, CPU, torch.bfloat16),
                      _diffusers_component(tiny_2_0["diffusers"], name))


def test_a_2_0_file_is_refused_where_2_3_configs_are_expected(tiny_2_0: dict[str, Path]
                                                              ) -> None:
    checkpoint = tiny_2_0["single-file"]
    with pytest.raises(CheckpointError) as refused:
        describe_single_file(checkpoint, checkpoint.parent / GEMMA_DIR, shapes="ltx-2.3")
    assert str(checkpoint) in refused.value.message
    assert "is an LTX-2.0 checkpoint, but the LTX-2.3 configs" in refused.value.message
    assert refused.value.exit_code == 3  # invalid input: bills 0


def test_a_2_3_file_is_refused_where_2_0_configs_are_expected(real: RealShapeModels) -> None:
    with pytest.raises(CheckpointError, match=r"is an LTX-2\.3 checkpoint, but the LTX-2\.0"):
        describe_single_file(real.checkpoint, real.gemma, shapes=LTX_2_0.cut_depth())


def test_the_release_configs_refuse_a_cut_file(real: RealShapeModels) -> None:
    """The 22B release's configs against the one-block file: 47 blocks are missing."""
    with pytest.raises(CheckpointError, match=r"lacks \d+ of the \d+ transformer weights of "
                                              "ltx-2.3"):
        describe_single_file(real.checkpoint, real.gemma, shapes=LTX_2_3)


def test_gemma_folder_is_required_and_checked(real: RealShapeModels,
                                             tiny_2_0: dict[str, Path], tmp_path: Path) -> None:
    def refused(gemma: Path | None) -> str:
        with pytest.raises(CheckpointError) as error:
            describe_single_file(real.checkpoint, gemma)
        return error.value.message

    assert "holds no text encoder: give its Gemma-3 folder" in refused(None)
    assert f"{tmp_path} is not a Gemma-3 folder (no config.json)" in refused(tmp_path)
    config = json.loads((real.gemma / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    assert "holds a 'llama' model, not Gemma-3" in refused(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert "holds no weights" in refused(tmp_path)
    tiny_gemma = tiny_2_0["single-file"].parent / GEMMA_DIR  # Gemma-3, but 32 wide
    message = refused(tiny_gemma)
    assert "its text features (32 wide, 3 hidden states) are not what" in message
    assert "(3840 wide, 2 hidden states" in message


def test_unknown_and_broken_checkpoints(tiny_2_0: dict[str, Path], tmp_path: Path) -> None:
    checkpoint = tiny_2_0["single-file"]
    gemma = checkpoint.parent / GEMMA_DIR
    weights = load_file(checkpoint)

    def refused(path: Path) -> str:
        with pytest.raises(CheckpointError) as error:
            describe_single_file(path, gemma)
        assert str(path) in error.value.message
        return error.value.message

    def variant(name: str, tensors: dict[str, torch.Tensor]) -> Path:
        save_file(tensors, tmp_path / name, metadata=_metadata(checkpoint))
        return tmp_path / name

    (tmp_path / "notes.safetensors").write_text("not a checkpoint")
    assert "is not a safetensors checkpoint" in refused(tmp_path / "notes.safetensors")
    assert "does not exist" in refused(tmp_path / "missing.safetensors")
    other = variant("other.safetensors", {"unet.conv_in.weight": torch.zeros(4, 4)})
    assert "is not an LTX-2 checkpoint" in refused(other)
    scaled = variant("fp8.safetensors", {
        **weights, "model.diffusion_model.proj_out.weight_scale": torch.ones(())})
    assert "fp8-quantized" in refused(scaled)
    lacking = variant("lacking.safetensors", {
        k: v for k, v in weights.items() if k != "vae.per_channel_statistics.mean-of-means"})
    assert "lacks 1 of the" in refused(lacking) and "vae weights" in refused(lacking)
    key = "model.diffusion_model.patchify_proj.weight"
    resized = variant("resized.safetensors", {**weights, key: weights[key][:, :-1].clone()})
    message = refused(resized)
    assert "transformer weights do not have" in message and key in message


def test_unclaimed_keys_are_ignored_with_a_warning(tiny_2_0: dict[str, Path], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = tiny_2_0["single-file"]
    extended = tmp_path / "extended.safetensors"
    save_file({**load_file(checkpoint), "vae.per_channel_statistics.mean-of-stds": torch.ones(8),
               "model.diffusion_model.extra_table": torch.ones(3)}, extended,
              metadata=_metadata(checkpoint))
    with caplog.at_level("WARNING"):
        files = describe_single_file(extended, checkpoint.parent / GEMMA_DIR)
    assert files.version == "2.0"
    assert "1 keys belong to no component" in caplog.text  # mean-of-stds is dropped silently


#: what ltx-core's transformer configurator refuses any other value of (written out from
#: its checks): a file without them fails with "Config value dropout is None, expected 0.0"
LTX_CORE_REQUIRES = {
    "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None,
    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
    "use_linear_projection": False, "only_cross_attention": False, "cross_attention_norm": True,
    "double_self_attention": False, "upcast_attention": False,
    "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
    "positional_embedding_type": "rope", "use_audio_video_cross_attention": True,
    "share_ff": False, "av_cross_ada_norm": True, "use_middle_indices_grid": True,
}


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_single_files_carry_the_official_config_metadata(version, tiny_model, tiny_model_v23,
                                                         tmp_path):
    from safetensors import safe_open

    model = tiny_model if version == "2.0" else tiny_model_v23
    path = write_layouts({"single-file": tmp_path}, ModelShapes.from_folder(model)
                         )["single-file"]
    with safe_open(path, "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
        q = f.get_slice("model.diffusion_model.transformer_blocks.0.attn1.to_q.weight")
        width = q.get_shape()[0]
    config = json.loads(meta["config"])["transformer"]
    for key, value in LTX_CORE_REQUIRES.items():
        assert config.get(key) == value, key
    assert config["num_attention_heads"] == config["audio_num_attention_heads"]
    # the numbers are the file's own
    blocks = {k.split(".")[3] for k in keys if k.startswith("model.diffusion_model.transformer_")}
    assert config["num_layers"] == len(blocks)
    assert config["num_attention_heads"] * config["attention_head_dim"] == width
    # LTX-2.3's flags, which ComfyUI reads from here alone, follow the weights
    v23 = version == "2.3"
    assert config["apply_gated_attention"] is any("to_gate_logits" in k for k in keys) is v23
    assert config["cross_attention_adaln"] is v23
    assert config["caption_proj_before_connector"] is v23
    assert any(k.startswith("model.diffusion_model.caption_projection.") for k in keys) is not v23


#: ltx-core's resamplers by name: the stride they apply (frames, height, width)
_STRIDES = {"time": 2, "space": 4, "all": 8}


def _width(shapes: dict[str, list[int]], key: str, axis: int = 0) -> int:
    return shapes[key][axis]


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_the_config_metadata_builds_the_files_vaes_and_vocoder(version, tiny_model,
                                                               tiny_model_v23, tmp_path):
    """The `vae`, `audio_vae` and `vocoder` sections, read as ltx-core's configurators read
    them (the block lists walked, each block's channels carried on), give every width of the
    file's own weights: without them ltx-core builds its default VAE and vocoder, which the
    weights do not fit."""
    from safetensors import safe_open

    model = tiny_model if version == "2.0" else tiny_model_v23
    path = write_layouts({"single-file": tmp_path}, ModelShapes.from_folder(model)
                         )["single-file"]
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["config"])
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    keys = set(shapes)

    # the video encoder: conv_in gives the latent width, then one block after another
    vae = config["vae"]
    assert vae["_class_name"] == "CausalVideoAutoencoder"
    enc = "vae.encoder."
    assert _width(shapes, enc + "conv_in.conv.weight", 1) == vae["in_channels"] * vae[
        "patch_size"] ** 2
    width = vae["latent_channels"]
    assert _width(shapes, enc + "conv_in.conv.weight") == width
    for i, (name, block) in enumerate(vae["encoder_blocks"]):
        if name == "res_x":
            resnets = {k.split(".")[4] for k in keys if k.startswith(f"{enc}down_blocks.{i}.")}
            assert len(resnets) == block["num_layers"], (i, resnets)
            assert _width(shapes, f"{enc}down_blocks.{i}.res_blocks.0.conv1.conv.weight") == width
        else:
            out = width * block["multiplier"]
            stride = _STRIDES[name.removeprefix("compress_").removesuffix("_res")]
            assert _width(shapes, f"{enc}down_blocks.{i}.conv.conv.weight") == out // stride
            width = out
    assert len(vae["encoder_blocks"]) == len({k.split(".")[3] for k in keys
                                                if k.startswith(enc + "down_blocks.")})
    assert _width(shapes, enc + "conv_out.conv.weight", 1) == width
    assert _width(shapes, enc + "conv_out.conv.weight") == vae["latent_channels"] + 1  # uniform

    # the decoder: built from the reversed list, from the bottleneck down to its base width
    dec = "vae.decoder."
    blocks = vae["decoder_blocks"][::-1]
    width = vae["decoder_base_channels"]
    for name, block in blocks:
        if name.startswith("compress_"):
            width *= block["multiplier"]
    assert _width(shapes, dec + "conv_in.conv.weight") == width
    assert _width(shapes, dec + "conv_in.conv.weight", 1) == vae["latent_channels"]
    for i, (name, block) in enumerate(blocks):
        if name == "res_x":
            resnets = {k.split(".")[4] for k in keys if k.startswith(f"{dec}up_blocks.{i}.")}
            assert len(resnets) == block["num_layers"], (i, resnets)
            assert _width(shapes, f"{dec}up_blocks.{i}.res_blocks.0.conv1.conv.weight") == width
        else:
            stride = _STRIDES[name.removeprefix("compress_")]
            assert _width(shapes, f"{dec}up_blocks.{i}.conv.conv.weight") == (
                width * stride // block["multiplier"])
            width //= block["multiplier"]
    assert len(blocks) == len({k.split(".")[3] for k in keys if k.startswith(dec + "up_blocks.")})
    assert width == vae["decoder_base_channels"] == _width(shapes, dec + "conv_out.conv.weight", 1)
    # ltx-core's encoder reads `spatial_padding_mode` first, its decoder defaults to reflect
    padding = folder_config(model, "vae")
    assert vae.get("spatial_padding_mode", vae["encoder_spatial_padding_mode"]) == padding[
        "encoder_spatial_padding_mode"]
    assert vae.get("spatial_padding_mode", "reflect") == padding["decoder_spatial_padding_mode"]

    # the audio VAE, in ltx-core's nested form
    ddconfig = config["audio_vae"]["model"]["params"]["ddconfig"]
    a = "audio_vae.encoder."
    assert _width(shapes, a + "conv_in.conv.weight") == ddconfig["ch"]
    assert _width(shapes, a + "conv_in.conv.weight", 1) == ddconfig["in_channels"]
    assert len({k.split(".")[3] for k in keys if k.startswith(a + "down.")}) == len(
        ddconfig["ch_mult"])
    for level, mult in enumerate(ddconfig["ch_mult"]):
        blocks = {k.split(".")[5] for k in keys if k.startswith(f"{a}down.{level}.block.")}
        assert len(blocks) == ddconfig["num_res_blocks"]
        assert _width(shapes, f"{a}down.{level}.block.0.conv1.conv.weight") == (
            ddconfig["ch"] * mult)
    assert _width(shapes, a + "conv_out.conv.weight") == ddconfig["z_channels"] * (
        2 if ddconfig["double_z"] else 1)
    assert _width(shapes, "audio_vae.decoder.conv_out.conv.weight") == ddconfig["out_ch"]
    assert ddconfig["attn_resolutions"] == [] and not any(".attn." in k for k in keys
                                                          if k.startswith("audio_vae."))
    assert config["audio_vae"]["preprocessing"]["mel"]["n_mel_channels"] == ddconfig[
        "mel_bins"] == folder_config(model, "audio_vae")["mel_bins"]

    # the vocoder: flat for 2.0, vocoder + bandwidth extension for 2.3
    vocoder = config["vocoder"]
    parts = ({"vocoder.vocoder.": vocoder["vocoder"], "vocoder.bwe_generator.": vocoder["bwe"]}
             if version == "2.3" else {"vocoder.": vocoder})
    assert ("bwe" in vocoder) is (version == "2.3")
    for prefix, part in parts.items():
        assert _width(shapes, prefix + "conv_pre.weight") == part["upsample_initial_channel"]
        ups = sorted({int(k.split(".")[-2]) for k in keys
                      if re.match(re.escape(prefix) + r"ups\.\d+\.weight$", k)})
        assert len(ups) == len(part["upsample_rates"])
        assert [_width(shapes, f"{prefix}ups.{i}.weight", 2) for i in ups] == part[
            "upsample_kernel_sizes"]
        resblocks = {m.group(1) for k in keys
                     if (m := re.match(re.escape(prefix) + r"resblocks\.(\d+)\.", k))}
        assert len(resblocks) == len(ups) * len(part["resblock_kernel_sizes"])
        assert part["stereo"] and _width(shapes, prefix + "conv_post.weight") == 2
        assert (prefix + "conv_post.bias" in keys) is part["use_bias_at_final"]
        # ltx-core's 2.3 vocoder takes AMP blocks with snakebeta activations, 2.0's plain ones
        assert part["resblock"] == ("AMP1" if version == "2.3" else "1")
    if version == "2.3":
        bwe = folder_config(model, "vocoder")
        assert (vocoder["bwe"]["input_sampling_rate"], vocoder["bwe"]["output_sampling_rate"],
                vocoder["bwe"]["n_fft"], vocoder["bwe"]["hop_length"]) == (
            bwe["input_sampling_rate"], bwe["output_sampling_rate"], bwe["filter_length"],
            bwe["hop_length"])


def folder_config(model: Path, name: str) -> dict:
    return json.loads((model / name / "config.json").read_text())
