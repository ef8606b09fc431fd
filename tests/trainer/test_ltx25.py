"""LTX-2.5's split pack (one file per component) at the tiny model's shapes: it resolves to
the model every loader takes, equal to the diffusers folder of the same weights, and what
cannot give LTX-2.5 (a missing part, a 2.3 file mixed in, a stock Gemma 4, a stated version
the files contradict) is refused naming the file, before any work, billing nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ltx_contract.outcomes import ExitCode, InvalidInput
from ltx_trainer.cli import main
from ltx_trainer.model.loader import load_component, read_profile
from ltx_trainer.model.shapes import ModelShapes
from ltx_trainer.model.source import resolve_model
from ltx_trainer.model.split_pack import (
    AUDIO_VAE_FILE,
    GEMMA_SOURCE_METADATA,
    TEXT_ENCODER_FILE,
    VIDEO_VAE_FILES,
    SplitPackModel,
)
from ltx_trainer.model.writer import write_layouts

CPU = torch.device("cpu")
WEIGHTED = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder",
            "diffusion_decoder")


@pytest.fixture(scope="module")
def pack(tiny_model_v25: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny LTX-2.5 model's shapes as a diffusers folder and as the published split pack
    (diffusion_models/, text_encoders/, vae/), the same weights."""
    root = tmp_path_factory.mktemp("ltx25-layouts")
    return write_layouts({"diffusers": root / "diffusers", "split": root / "pack"},
                         ModelShapes.from_folder(tiny_model_v25))


def _copy_pack(pack: dict[str, Path], dest: Path) -> Path:
    shutil.copytree(pack["split"].parent.parent, dest)
    return dest / "diffusion_models" / pack["split"].name


def _rewrite(path: Path, drop: str = "", metadata: dict[str, str] | None = None) -> None:
    """The file again without the keys starting with `drop`, with `metadata` instead of its own."""
    with safe_open(path, framework="pt") as file:
        tensors = {k: file.get_tensor(k) for k in file.keys() if not (drop and k.startswith(drop))}
        meta = file.metadata() if metadata is None else metadata
    save_file(tensors, path, metadata=meta)


def test_the_pack_resolves_to_the_folders_model(pack: dict[str, Path], tmp_path: Path) -> None:
    model = resolve_model(pack["split"], tmp_path)
    assert isinstance(model, SplitPackModel)
    assert model.checkpoint == pack["split"] and model.name == pack["split"].name
    assert read_profile(model) == read_profile(pack["diffusers"])
    assert read_profile(model).decoders == ("convolutional", "diffusion")
    assert model.files["vae"].name == VIDEO_VAE_FILES["convolutional"]  # the lighter file
    assert model.files["diffusion_decoder"].name == VIDEO_VAE_FILES["diffusion"]
    for name in WEIGHTED:
        ours = load_component(model, name, CPU, torch.float32).state_dict()
        folders = load_component(pack["diffusers"], name, CPU, torch.float32).state_dict()
        assert ours.keys() == folders.keys(), name
        assert all(torch.equal(ours[k], folders[k]) for k in ours), name
    assert load_component(model, "tokenizer", CPU)("a door opens").input_ids == \
        load_component(pack["diffusers"], "tokenizer", CPU)("a door opens").input_ids
    assert load_component(model, "scheduler", CPU).config == \
        load_component(pack["diffusers"], "scheduler", CPU).config
    # named parts instead of the published layout; a pack with the diffusion decoder only
    alone = tmp_path / "alone"
    alone.mkdir()
    for part in (pack["split"], *(pack["split"].parent.parent / "vae").iterdir()):
        shutil.copy(part, alone / part.name)
    text = pack["split"].parent.parent / "text_encoders" / TEXT_ENCODER_FILE
    (alone / VIDEO_VAE_FILES["convolutional"]).unlink()
    named = resolve_model(alone / pack["split"].name, tmp_path, text)
    assert named.profile.decoders == ("diffusion",)
    encoder = load_component(named, "vae", CPU, torch.float32)
    assert encoder.decoder is None and encoder.encoder is not None


def test_what_cannot_give_ltx25_is_refused_naming_the_file(pack: dict[str, Path], tmp_path: Path,
                                                            tiny_model_v23: Path) -> None:
    def refused(transformer: Path, **parts: Path | str | None) -> str:
        with pytest.raises(InvalidInput) as info:
            resolve_model(transformer, tmp_path / "cache", **parts)
        return info.value.message

    missing = _copy_pack(pack, tmp_path / "missing")
    (missing.parent.parent / "vae" / AUDIO_VAE_FILE).unlink()
    message = refused(missing)
    assert str(missing) in message and f"has no audio vae file: put {AUDIO_VAE_FILE}" in message
    assert "--audio-vae (spec.model.audioVae)" in message

    mixed = _copy_pack(pack, tmp_path / "mixed")
    audio = mixed.parent.parent / "vae" / AUDIO_VAE_FILE
    _rewrite(audio, metadata={"model_version": "2.3.0"})
    message = refused(mixed)
    assert f"{audio} is an LTX-2.3 file" in message and "do not mix" in message
    # a 2.3 single file named as a part, and a 2.3 transformer as --model
    single = tmp_path / "ltx-2.3.safetensors"
    save_file({"model.diffusion_model.patchify_proj.weight": torch.zeros(1, 1),
               "vae.encoder.conv_in.conv.weight": torch.zeros(1)}, single)
    assert f"{single} is an LTX-2.3 single file" in refused(pack["split"], audio_vae=single)
    old = tmp_path / "ltx-2.3-transformer.safetensors"
    save_file({"model.diffusion_model.transformer_blocks.0.ff.net.0.proj.bias": torch.zeros(1)},
              old)
    assert f"{old} is an LTX-2.3 transformer" in refused(old)

    stock = _copy_pack(pack, tmp_path / "stock")
    text = stock.parent.parent / "text_encoders" / TEXT_ENCODER_FILE
    _rewrite(text, drop="text_embedding_projection.", metadata={})
    message = refused(stock)
    assert f"{text} is not the LTX-tuned Gemma 4" in message and "stock Gemma 4" in message
    unnamed = _copy_pack(pack, tmp_path / "unnamed")
    text = unnamed.parent.parent / "text_encoders" / TEXT_ENCODER_FILE
    with safe_open(text, framework="pt") as file:
        meta = {k: v for k, v in file.metadata().items() if k != GEMMA_SOURCE_METADATA}
    _rewrite(text, metadata=meta)
    assert "names no source model, not gemma4-12b-ltx-v1" in refused(unnamed)

    # a stated version the files contradict, naming both; a folder's mixed parts
    message = refused(pack["split"], version="ltx-2.3")
    assert "spec.model.version is ltx-2.3, but the model at" in message and "is ltx-2.5" in message
    assert "is ltx-2.3 (read from its files)" in refused(tiny_model_v23, version="ltx-2.5")
    folder = tmp_path / "folder"
    shutil.copytree(pack["diffusers"], folder)
    shutil.copy(tiny_model_v23 / "text_encoder" / "config.json",
                folder / "text_encoder" / "config.json")
    assert f"{folder}: the model's text encoder is 'gemma3'" in refused(folder)


def test_a_job_on_a_stock_gemma_pack_exits_3_bills_nothing(pack: dict[str, Path],
                                                           tmp_path: Path) -> None:
    stock = _copy_pack(pack, tmp_path / "stock")
    text = stock.parent.parent / "text_encoders" / TEXT_ENCODER_FILE
    _rewrite(text, drop="text_embedding_projection.", metadata={})
    spec = {"trainingDataUrl": "s3://datasets/clips.zip", "numberOfSteps": 100,
            "model": {"url": stock.as_uri()}}
    log, work = tmp_path / "termination", tmp_path / "work"
    assert main(["job", "train", "--spec-json", json.dumps(spec), "--store",
                 str(tmp_path / "store"), "--run", "team/stock/uid", "--work", str(work),
                 "--termination-log", str(log), "--progress-port", "0"]) == \
        ExitCode.INVALID_INPUT
    result = json.loads(log.read_text())
    assert (result["outcome"], result["reason"], result["billableUnits"]) == (
        "Failed", "InvalidInput", 0)
    assert str(text) in result["message"] and "stock Gemma 4" in result["message"]
    assert not (work / "train").exists()  # refused before the dataset was fetched


def test_every_file_of_the_pack_carries_the_config_of_its_parts(pack: dict[str, Path]) -> None:
    """The transformer file carries the whole release `config`; each VAE file the sections
    of the parts it holds, equal to the transformer file's and fitting its own weights."""
    root = pack["split"].parent.parent
    with safe_open(pack["split"], framework="pt") as file:
        whole = json.loads(file.metadata()["config"])
    assert {"transformer", "vae", "audio_vae", "vocoder"} <= set(whole)
    sections = {VIDEO_VAE_FILES["convolutional"]: {"vae"}, VIDEO_VAE_FILES["diffusion"]: {"vae"},
                AUDIO_VAE_FILE: {"audio_vae", "vocoder"}}
    assert (root / "vae" / VIDEO_VAE_FILES["convolutional"]).is_file()
    for name, wanted in sections.items():
        if not (root / "vae" / name).is_file():  # a pack without the diffusion decoder
            continue
        with safe_open(root / "vae" / name, framework="pt") as file:
            config = json.loads(file.metadata()["config"])
            shapes = {k: file.get_slice(k).get_shape() for k in file.keys()}
        assert set(config) == wanted, name
        assert config == {k: whole[k] for k in wanted}, name
        if "vae" in wanted:  # the encoder's first convolution: the VAE's latent width
            assert shapes["vae.encoder.conv_in.conv.weight"][0] == config["vae"][
                "latent_channels"], name
        else:  # every weight of the file belongs to a part its config describes
            assert {k.split(".")[0] for k in shapes} == wanted


def test_tiny_model_writes_ltx25_in_its_published_layouts(tmp_path: Path, capsys) -> None:
    assert main(["tiny-model", str(tmp_path / "x"), "--shapes", "ltx-2.5", "--layout",
                 "single-file"]) == ExitCode.INVALID_INPUT
    assert "ltx-2.5-1-block is not published in the single-file layout: choose diffusers or " \
        "split" in \
        capsys.readouterr().err
    assert main(["tiny-model", str(tmp_path / "y"), "--shapes", "ltx-2.3", "--layout",
                 "split"]) == ExitCode.INVALID_INPUT
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
