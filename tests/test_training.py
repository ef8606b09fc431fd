"""Suffix-conditioned LoRA training on the tiny LTX-2 model (CPU)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.dataset import FetchPolicy, PrepareSettings, prepare_dataset
from ltx_trainer.training.encode import encode_dataset, load_sample
from ltx_trainer.training.strategy import prepare_step
from ltx_trainer.training.trainer import Interrupted, Trainer, TrainSettings

from media_factory import make_clip

CPU = torch.device("cpu")
SETTINGS = TrainSettings(max_sequence_length=32, checkpoint_every=40)


def make_spec(archive: Path, **fields):
    return parse_spec({"trainingDataUrl": archive.as_uri(), "numberOfSteps": 100,
                       "numberOfFrames": 25, "resolution": "low", "aspectRatio": "16:9",
                       "rank": 16, "learningRate": 3e-3, **fields})


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, tiny_model):
    """Prepared and encoded datasets (one clip; two clips), with and without audio."""
    root = tmp_path_factory.mktemp("train-data")
    clips = [make_clip(root / f"c{i}.mp4", 1.2, fps=24, size=(160, 96), tone_hz=300.0 * (i + 1))
             for i in range(2)]
    out = {}
    for name, members in (("one", clips[:1]), ("two", clips)):
        archive = root / f"{name}.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for i, clip in enumerate(members):
                z.write(clip, clip.name)
                z.writestr(f"{clip.stem}.txt", ["a square glides", "a bright square drifts"][i])
        for audio in (True, False):
            spec = make_spec(archive, withAudio=audio)
            work = root / f"{name}-{audio}"
            prepare_dataset(spec, work, PrepareSettings(fetch=FetchPolicy(allow_file_urls=True)))
            encode_dataset(work / "dataset", work / "cache", tiny_model, CPU, with_audio=audio,
                           max_sequence_length=SETTINGS.max_sequence_length)
            out[name, audio] = (archive, work)
    return out


def fresh_work(source: Path, dest: Path) -> Path:
    """A work directory with the prepared dataset and latent cache, nothing else."""
    for part in ("dataset", "cache"):
        shutil.copytree(source / part, dest / part)
    return dest


def test_suffix_tokens_are_clean_at_timestep_zero_and_out_of_the_loss(datasets):
    from diffusers import LTX2Pipeline

    _, work = datasets["one", True]
    index = json.loads((work / "cache" / "index.json").read_text())
    meta = index["samples"][0]
    cached = load_sample(work / "cache", meta)
    suffix = SuffixWindow(meta["frames"], meta["frameRate"], 8)
    inputs = prepare_step(cached, suffix, with_audio=True,
                          generator=torch.Generator().manual_seed(1),
                          pack=LTX2Pipeline._pack_latents)
    _, frames, height, width = cached["video"].shape
    per_frame = height * width
    clean = LTX2Pipeline._pack_latents(cached["video"].unsqueeze(0))
    suffix_tokens = slice((frames - suffix.suffix_latent_frames) * per_frame, None)
    lead_tokens = slice(0, (frames - suffix.suffix_latent_frames) * per_frame)
    assert torch.equal(inputs.video[:, suffix_tokens], clean[:, suffix_tokens])
    assert torch.all(inputs.video_timestep[:, suffix_tokens] == 0)
    assert torch.all(inputs.video_loss_mask[:, suffix_tokens] == 0)
    assert torch.all(inputs.video_timestep[:, lead_tokens] == inputs.sigma) and inputs.sigma > 0
    assert torch.all(inputs.video_loss_mask[:, lead_tokens] == 1)
    assert not torch.allclose(inputs.video[:, lead_tokens], clean[:, lead_tokens])
    # audio: the closing window is clean at timestep 0, the rest noised and trained
    first = suffix.first_suffix_audio_latent
    assert torch.equal(inputs.audio[:, first:], cached["audio"].unsqueeze(0)[:, first:])
    assert torch.all(inputs.audio_timestep[:, first:] == 0)
    assert torch.all(inputs.audio_loss_mask[:, first:] == 0)
    assert torch.all(inputs.audio_loss_mask[:, :first] == 1)
    assert inputs.audio.shape[1] == suffix.audio_latent_frames == cached["audio"].shape[0]


@pytest.mark.parametrize("with_audio", [True, False])
def test_overfitting_one_clip(datasets, tiny_model, tmp_path, with_audio):
    archive, source = datasets["one", with_audio]
    work = fresh_work(source, tmp_path / "work")
    trainer = Trainer(make_spec(archive, withAudio=with_audio), tiny_model, work, CPU, SETTINGS)
    before = trainer.evaluate(work / "dataset")
    result = trainer.train(work / "dataset")
    after = trainer.evaluate(work / "dataset")
    assert after < 0.7 * before, (before, after)
    assert result.steps == 100 and len(result.losses) == 100
    losses = trainer.loss(*_any_step(work, with_audio, trainer))
    assert ("audio" in losses) is with_audio  # with audio off, no audio loss is computed


def _any_step(work: Path, with_audio: bool, trainer: Trainer):
    index = json.loads((work / "cache" / "index.json").read_text())
    meta = index["samples"][0]
    cached = load_sample(work / "cache", meta)
    inputs = prepare_step(cached, SuffixWindow(meta["frames"], meta["frameRate"], 8),
                          with_audio=with_audio, generator=torch.Generator().manual_seed(0),
                          pack=trainer.pack)
    return inputs, cached["text"], float(meta["frameRate"])


def test_resume_gives_the_same_lora(datasets, tiny_model, tmp_path):
    archive, source = datasets["two", True]
    spec = make_spec(archive, withAudio=True)
    straight = Trainer(spec, tiny_model, fresh_work(source, tmp_path / "a"), CPU,
                       SETTINGS).train(tmp_path / "a" / "dataset")

    work = fresh_work(source, tmp_path / "b")
    with pytest.raises(Interrupted):
        Trainer(spec, tiny_model, work, CPU, SETTINGS).train(work / "dataset", stop_after=50)
    assert [p.name for p in sorted((work / "checkpoints").glob("step-*"))] == ["step-000040"]
    cache_files = {p: p.stat().st_mtime_ns for p in (work / "cache").rglob("*") if p.is_file()}
    resumed = Trainer(spec, tiny_model, work, CPU, SETTINGS).train(work / "dataset")
    # the cache was reused, not encoded again
    assert {p: p.stat().st_mtime_ns for p in cache_files} == cache_files
    assert resumed.losses == straight.losses
    a, b = load_file(straight.lora_file), load_file(resumed.lora_file)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=0, atol=1e-6)


def test_lora_file_loads_into_a_diffusers_pipeline_and_changes_it(datasets, tiny_model,
                                                                   tmp_path):
    from diffusers import LTX2Pipeline
    from peft import get_peft_model_state_dict

    archive, source = datasets["one", False]
    work = fresh_work(source, tmp_path / "w")
    result = Trainer(make_spec(archive, triggerPhrase="LEADIN"), tiny_model, work, CPU,
                     SETTINGS).train(work / "dataset")
    saved = load_file(result.lora_file)
    assert saved and all(k.startswith("diffusion_model.transformer_blocks.") for k in saved)
    targets = {k.split(".")[3] for k in saved}
    assert targets == {"attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn",
                       "video_to_audio_attn"}
    with safe_open(result.lora_file, "pt") as f:
        meta = f.metadata()
    assert (meta["trainingType"], meta["triggerPhrase"], meta["rank"]) == (
        "extend-suffix", "LEADIN", "16")
    config = json.loads(result.config_file.read_text())
    assert config["conditioningFrames"] == 8 and config["withAudio"] is False

    pipe = LTX2Pipeline.from_pretrained(tiny_model)
    call = dict(prompt="a square glides", negative_prompt="", num_inference_steps=2, height=64,
                width=64, num_frames=9, frame_rate=24, output_type="pt", max_sequence_length=16,
                guidance_scale=1.0, stg_scale=0.0, audio_guidance_scale=1.0, audio_stg_scale=0.0,
                modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0,
                audio_guidance_rescale=0.0, use_cross_timestep=False,
                spatio_temporal_guidance_blocks=None)
    base = pipe(generator=torch.Generator().manual_seed(0), **call).frames
    pipe.load_lora_weights(str(result.lora_file), adapter_name="extend")
    loaded = get_peft_model_state_dict(pipe.transformer, adapter_name="extend")
    assert len(loaded) == len(saved)  # every tensor found its module
    for key, value in loaded.items():
        torch.testing.assert_close(value.float(), saved[f"diffusion_model.{key}"].float())
    with_lora = pipe(generator=torch.Generator().manual_seed(0), **call).frames
    assert (with_lora - base).abs().max() > 1e-3
