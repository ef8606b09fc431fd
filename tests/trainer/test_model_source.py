"""A model named by the user — a diffusers folder, or the official single-file checkpoint
with its Gemma-3 folder — resolved once into what every loader takes, and refused with a
message naming the file (exit 3, nothing billed) before anything is encoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_contract.outcomes import ExitCode, InvalidInput
from ltx_contract.spec import SpecError, parse_spec
from ltx_trainer.cli import main
from ltx_trainer.model.loader import load_component, read_profile
from ltx_trainer.model.shapes import ModelShapes
from ltx_trainer.model.single_file import GEMMA_DIR, CheckpointError, SingleFileModel
from ltx_trainer.model.source import part_location, resolve_model
from ltx_trainer.model.writer import write_layouts

CPU = torch.device("cpu")
DATA = "https://example.com/clips.zip"


@pytest.fixture(scope="module")
def layouts(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model's shapes in both layouts (the same weights), and a file that is a
    safetensors file but no LTX-2 checkpoint."""
    root = tmp_path_factory.mktemp("source-layouts")
    paths = write_layouts({"diffusers": root / "diffusers", "single-file": root / "single"},
                          ModelShapes.from_folder(tiny_model))
    save_file({"weight": torch.zeros(2)}, root / "not-ltx.safetensors")
    return {**paths, "gemma": paths["single-file"].parent / GEMMA_DIR,
            "not-ltx": root / "not-ltx.safetensors"}


def test_a_single_file_resolves_to_the_model_every_loader_takes(layouts, tmp_path) -> None:
    model = resolve_model(layouts["single-file"], tmp_path, layouts["gemma"])
    assert isinstance(model, SingleFileModel)
    assert model.checkpoint == layouts["single-file"] and model.name == layouts["single-file"].name
    # the profile comes from the file's configs, the same as the diffusers folder's
    assert read_profile(model) == read_profile(layouts["diffusers"])
    folder_scheduler = load_component(layouts["diffusers"], "scheduler", CPU)
    assert load_component(model, "scheduler", CPU).config == folder_scheduler.config
    assert load_component(model, "tokenizer", CPU)("a square").input_ids == \
        load_component(layouts["diffusers"], "tokenizer", CPU)("a square").input_ids
    # a folder resolves to itself; a file:// checkpoint is used where it lies
    assert resolve_model(layouts["diffusers"], tmp_path).path == layouts["diffusers"]
    by_url = resolve_model(layouts["single-file"].as_uri(), tmp_path, layouts["gemma"].as_uri())
    assert by_url.checkpoint == layouts["single-file"] and not any(tmp_path.iterdir())


def test_what_cannot_give_a_model_is_refused_naming_it(layouts, tmp_path) -> None:
    cases = [
        ((layouts["single-file"], None), "holds no text encoder: give its Gemma-3 folder",
         layouts["single-file"]),
        ((layouts["not-ltx"], layouts["gemma"]), "is not an LTX-2 checkpoint", layouts["not-ltx"]),
        ((layouts["single-file"], layouts["diffusers"]), "is not a Gemma-3 folder",
         layouts["diffusers"]),
        ((layouts["diffusers"], layouts["gemma"]), "a separate text encoder or VAE goes with "
                                                   "a checkpoint only",
         layouts["diffusers"]),
        ((tmp_path / "missing.safetensors", layouts["gemma"]), "does not exist",
         tmp_path / "missing.safetensors"),
        ((None, layouts["gemma"]), "a text encoder or VAE was given without a model", ""),
    ]
    for (model, text_encoder), message, named in cases:
        with pytest.raises(InvalidInput) as refused:
            resolve_model(model, tmp_path, text_encoder)
        assert message in refused.value.message
        assert str(named) in refused.value.message
        assert refused.value.exit_code == ExitCode.INVALID_INPUT
        assert isinstance(refused.value, CheckpointError) == (model is not None and str(
            model).endswith(".safetensors"))


def test_spec_model_text_encoder_goes_with_a_checkpoint_only() -> None:
    def problems(model: dict) -> str:
        with pytest.raises(SpecError) as info:
            parse_spec({"trainingDataUrl": DATA, "model": model})
        return " ".join(info.value.problems)

    spec = parse_spec({"trainingDataUrl": DATA, "model": {
        "url": "s3://models/ltx/ltx-2.3-22b-dev.safetensors", "textEncoder": "gemma-3"}})
    assert spec.model.text_encoder == "gemma-3"
    assert part_location(spec.model.text_encoder, spec.model.url) == \
        "s3://models/ltx/gemma-3"
    assert part_location("gemma", "/models/ltx.safetensors") == "/models/gemma"
    assert part_location("s3://b/g", "s3://a/x.safetensors") == "s3://b/g"
    # a checkpoint without one may be LTX-2.5's (its text encoder file beside it); one
    # stated to be LTX-2.3's is refused at once, and the files decide otherwise
    assert parse_spec({"trainingDataUrl": DATA, "model": {
        "url": "s3://models/ltx-2.5-22b-dev-transformer-bf16.safetensors"}}).model.version is None
    assert "the checkpoint holds no text encoder" in problems(
        {"url": "s3://models/ltx-2.3-22b-dev.safetensors", "version": "ltx-2.3"})
    assert "the checkpoint holds no text encoder" in problems(
        {"claimName": "models", "subPath": "ltx/ltx-2.3-22b-dev.safetensors",
         "version": "ltx-2.3"})
    assert "a model folder has its own" in problems(
        {"url": "s3://models/ltx-2.3/", "textEncoder": "gemma-3"})
    for bad in ("/abs/gemma", "../gemma", "a/../../b", "http://x/g", ""):
        assert "textEncoder must be an s3:// or file:// URL, or a path relative" in problems(
            {"url": "s3://m/x.safetensors", "textEncoder": bad}), bad


def test_a_job_with_a_bad_checkpoint_exits_3_bills_nothing_and_encodes_nothing(
        layouts, tmp_path) -> None:
    checkpoint = tmp_path / "models" / "ltx-2.3-22b-dev.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(layouts["not-ltx"].read_bytes())
    spec = {"trainingDataUrl": "s3://datasets/clips.zip", "numberOfSteps": 100,
            "model": {"url": checkpoint.as_uri(), "textEncoder": "gemma-3"}}
    (tmp_path / "models" / "gemma-3").symlink_to(layouts["gemma"])
    store, log, work = tmp_path / "store", tmp_path / "termination", tmp_path / "work"
    assert main(["job", "train", "--spec-json", json.dumps(spec), "--store", str(store),
                 "--run", "team/bad-model/uid", "--work", str(work), "--termination-log",
                 str(log), "--progress-port", "0"]) == ExitCode.INVALID_INPUT
    result = json.loads(log.read_text())
    assert (result["outcome"], result["reason"], result["billableUnits"]) == (
        "Failed", "InvalidInput", 0)
    assert str(checkpoint) in result["message"] and "not an LTX-2 checkpoint" in \
        result["message"]
    assert not (work / "train").exists()  # refused before the dataset was fetched


def test_train_takes_the_single_file_on_the_command_line(layouts, tmp_path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"trainingDataUrl": DATA}))
    out = tmp_path / "out"
    assert main(["train", str(spec), "--output", out.as_uri(), "--model",
                 str(layouts["single-file"])]) == ExitCode.INVALID_INPUT
    assert "holds no text encoder" in capsys.readouterr().err
    assert main(["train", str(spec), "--output", out.as_uri(), "--model",
                 str(layouts["not-ltx"]), "--text-encoder", str(layouts["gemma"])]) == \
        ExitCode.INVALID_INPUT
    assert "is not an LTX-2 checkpoint" in capsys.readouterr().err
    assert main(["train", str(spec), "--output", out.as_uri(), "--text-encoder",
                 str(layouts["gemma"])]) == ExitCode.INVALID_INPUT
    assert "--text-encoder, --video-vae and --audio-vae go with --model FILE" in \
        capsys.readouterr().err
    assert not out.exists()  # nothing prepared, written or billed


def test_train_refuses_a_text_encoder_beside_a_model_folder(layouts, tmp_path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"trainingDataUrl": DATA}))
    assert main(["train", str(spec), "--output", str(tmp_path / "out"), "--model",
                 str(layouts["diffusers"]), "--text-encoder", str(layouts["gemma"])]) == \
        ExitCode.INVALID_INPUT
    assert "--text-encoder, --video-vae and --audio-vae go with a checkpoint only" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_extend_renders_the_same_from_either_layout(layouts, tmp_path) -> None:
    import av
    import numpy as np

    from harness.media_factory import make_clip

    clip = make_clip(tmp_path / "closing.mp4", 0.8, fps=24, size=(160, 96))
    common = ["--clip", str(clip), "--prompt", "a square glides in", "--frames", "17",
              "--resolution", "low", "--audio", "--steps", "2"]
    frames = {}
    for layout, model in (("folder", ["--model", str(layouts["diffusers"])]),
                          ("single", ["--model", str(layouts["single-file"]),
                                      "--text-encoder", str(layouts["gemma"])])):
        out = tmp_path / f"{layout}.mp4"
        assert main(["extend", *model, *common, "--output", str(out)]) == ExitCode.SUCCESS
        with av.open(str(out)) as container:
            assert {s.type for s in container.streams} == {"video", "audio"}
            frames[layout] = np.stack([f.to_ndarray(format="rgb24")
                                       for f in container.decode(video=0)])
    assert len(frames["single"]) == 17
    np.testing.assert_array_equal(frames["single"], frames["folder"])
