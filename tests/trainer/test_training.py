"""Suffix-conditioned LoRA training on the tiny LTX-2 models (CPU)."""

from __future__ import annotations

import itertools
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ltx_contract.outcomes import Diverged, InvalidInput
from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.codec.latents import pack_video
from ltx_trainer.codec.text import encode_texts, load_text, text_key
from ltx_trainer.dataset import FetchPolicy, PrepareSettings, prepare_dataset
from ltx_trainer.model.lora import LORA_PREFIX
from ltx_trainer.stages.context import JobContext
from ltx_trainer.stages.dispatch import run_local
from ltx_trainer.store import open_store
from ltx_trainer.training.preprocess import encode_dataset, load_sample
from ltx_trainer.training.trainer import Interrupted, Trainer, TrainSettings, step_generator

from harness.media_factory import make_clip

CPU = torch.device("cpu")
SETTINGS = TrainSettings(max_sequence_length=32, checkpoint_every=40)


def make_spec(archive: Path, **fields):
    return parse_spec({"trainingDataUrl": archive.as_uri(), "numberOfSteps": 100,
                       "numberOfFrames": 25, "resolution": "low", "aspectRatio": "16:9",
                       "rank": 16, "learningRate": 3e-3, **fields})


def prepare(root: Path, archive: Path, model: Path, audio: bool) -> Path:
    work = root / f"{archive.stem}-{model.name}-{audio}"
    spec = make_spec(archive, withAudio=audio)
    prepare_dataset(spec, work, PrepareSettings(fetch=FetchPolicy(allow_file_urls=True)))
    encode_dataset(work / "dataset", work / "cache", model, CPU, with_audio=audio,
                   max_sequence_length=SETTINGS.max_sequence_length)
    return work


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Dataset archives: one clip; two clips."""
    root = tmp_path_factory.mktemp("train-data")
    clips = [make_clip(root / f"c{i}.mp4", 1.2, fps=24, size=(160, 96), tone_hz=300.0 * (i + 1))
             for i in range(2)]
    out = {}
    for name, members in (("one", clips[:1]), ("two", clips)):
        archive = out[name] = root / f"{name}.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for i, clip in enumerate(members):
                z.write(clip, clip.name)
                z.writestr(f"{clip.stem}.txt", ["a square glides", "a bright square drifts"][i])
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, archives, tiny_model):
    """Prepared and encoded datasets on the LTX-2.0 tiny model, with and without audio."""
    root = tmp_path_factory.mktemp("train-work")
    return {(name, audio): (archives[name], prepare(root, archives[name], tiny_model, audio))
            for name in ("one", "two") for audio in (True, False)}


def fresh_work(source: Path, dest: Path) -> Path:
    """A work directory with the prepared dataset and latent cache, nothing else."""
    for part in ("dataset", "cache"):
        shutil.copytree(source / part, dest / part)
    return dest


def _first_sample(work: Path) -> tuple[dict, dict]:
    meta = json.loads((work / "cache" / "index.json").read_text())["samples"][0]
    return meta, load_sample(work / "cache", meta)


def test_suffix_tokens_are_clean_at_timestep_zero_and_out_of_the_loss(datasets, tiny_model,
                                                                       tmp_path):
    archive, work = datasets["one", True]
    trainer = Trainer(make_spec(archive, withAudio=True), tiny_model, tmp_path, CPU, SETTINGS)
    trainer._load()
    meta, cached = _first_sample(work)
    suffix = SuffixWindow(meta["frames"], meta["frameRate"], 8)
    inputs = trainer.prepare(cached, suffix, step_generator(0, 1))
    video, audio = inputs.video, inputs.audio
    _, frames, height, width = cached["video"].shape
    clean = pack_video(cached["video"].unsqueeze(0))
    first = (frames - suffix.suffix_latent_frames) * height * width
    sigma = video.state.sigma
    assert torch.equal(video.state.latents[:, first:], clean[:, first:])
    assert torch.all(video.state.timesteps[:, first:] == 0)
    assert torch.all(video.loss_mask[:, first:] == 0)
    assert torch.all(video.state.timesteps[:, :first] == sigma) and sigma > 0
    assert torch.all(video.loss_mask[:, :first] == 1)
    assert not torch.allclose(video.state.latents[:, :first], clean[:, :first])
    # audio: the closing window is clean at timestep 0, the rest noised to its own sigma
    start = suffix.first_suffix_audio_latent
    assert torch.equal(audio.state.latents[:, start:], cached["audio"].unsqueeze(0)[:, start:])
    assert torch.all(audio.state.timesteps[:, start:] == 0)
    assert torch.all(audio.state.timesteps[:, :start] == audio.state.sigma)
    assert audio.state.sigma != sigma  # each modality draws its own
    assert torch.all(audio.loss_mask[:, start:] == 0) and torch.all(audio.loss_mask[:, :start] == 1)
    assert audio.state.latents.shape[1] == suffix.audio_latent_frames == cached["audio"].shape[0]


@pytest.mark.parametrize("with_audio", [True, False])
def test_overfitting_one_clip(datasets, tiny_model, tmp_path, with_audio):
    archive, source = datasets["one", with_audio]
    work = fresh_work(source, tmp_path / "work")
    reports = []
    # the peak rate: the linear decay to a tenth averages 0.55 of it over the run
    spec = make_spec(archive, withAudio=with_audio, learningRate=6e-3)
    trainer = Trainer(spec, tiny_model, work, CPU, SETTINGS, progress=reports.append)
    result = trainer.train(work / "dataset")
    # the run's own validation loss (fixed noise levels and noise), against the untrained
    # LoRA's on the same windows
    untrained = Trainer(spec, tiny_model, tmp_path / "untrained", CPU, SETTINGS)
    untrained._load()
    before = trainer.validator.evaluate(untrained, 0).loss
    after = result.validation[-1].loss
    assert result.validation[-1].step == 100 and after < 0.7 * before, (before, after)
    assert result.steps == 100 and len(result.losses) == 100
    # every step reports what loss curves plot: each trained modality's loss and noise
    modalities = {"video", "audio"} if with_audio else {"video"}
    assert [r.step for r in reports] == list(range(1, 101))
    for report, loss in zip(reports, result.losses, strict=True):
        assert set(report.losses) == modalities | {"total"} and set(report.sigmas) == modalities
        assert report.losses["total"] == pytest.approx(
            sum(report.losses[m] for m in modalities), rel=1e-5)
        assert report.loss == loss and 0 < min(report.sigmas.values()) <= 1
        assert report.grad_norm > 0
    # learningRate is the peak, decaying linearly to a tenth at the last step
    rates = [r.learning_rate for r in reports]
    assert rates[0] == pytest.approx(6e-3) and rates[-1] == pytest.approx(6e-4)
    assert rates[50] == pytest.approx(6e-3 * (1 - 0.9 * 50 / 99))
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert len({round(r.sigmas["video"], 6) for r in reports}) > 90  # drawn afresh each step
    meta, cached = _first_sample(work)
    inputs = trainer.prepare(cached, SuffixWindow(meta["frames"], meta["frameRate"], 8),
                             step_generator(0, 0))
    losses = trainer.loss(inputs, cached["text"])
    assert ("audio" in losses) is with_audio  # with audio off, no audio loss is computed


def test_resume_gives_the_same_lora(datasets, tiny_model, tmp_path):
    archive, source = datasets["two", True]
    spec = make_spec(archive, withAudio=True)
    straight_rates, resumed_rates = {}, {}

    def rates(into):
        return lambda report: into.__setitem__(report.step, report.learning_rate)

    straight = Trainer(spec, tiny_model, fresh_work(source, tmp_path / "a"), CPU,
                       SETTINGS, progress=rates(straight_rates)).train(tmp_path / "a" / "dataset")

    work = fresh_work(source, tmp_path / "b")
    with pytest.raises(Interrupted):
        Trainer(spec, tiny_model, work, CPU, SETTINGS,
                progress=rates(resumed_rates)).train(work / "dataset", stop_after=50)
    assert [p.name for p in sorted((work / "checkpoints").glob("step-*"))] == ["step-000040"]
    cache_files = {p: p.stat().st_mtime_ns for p in (work / "cache").rglob("*") if p.is_file()}
    resumed = Trainer(spec, tiny_model, work, CPU, SETTINGS,
                      progress=rates(resumed_rates)).train(work / "dataset")
    # the cache was reused, not encoded again
    assert {p: p.stat().st_mtime_ns for p in cache_files} == cache_files
    # the learning-rate schedule goes on from the checkpoint: steps 41… at the same rates
    assert resumed_rates == straight_rates and len(set(straight_rates.values())) == 100
    assert resumed.losses == straight.losses
    a, b = load_file(straight.lora_file), load_file(resumed.lora_file)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=0, atol=1e-6)


def test_lora_file_round_trips_through_diffusers_and_holds_only_trained_modules(
        datasets, tiny_model, tmp_path):
    from diffusers import LTX2Pipeline
    from peft import get_peft_model_state_dict

    archive, source = datasets["one", False]
    work = fresh_work(source, tmp_path / "w")
    result = Trainer(make_spec(archive, triggerPhrase="LEADIN"), tiny_model, work, CPU,
                     SETTINGS).train(work / "dataset")
    saved = load_file(result.lora_file)
    assert saved and all(k.startswith("diffusion_model.transformer_blocks.") for k in saved)
    # video only: the audio and cross-modal attentions would never get a gradient
    assert {k.split(".")[3] for k in saved} == {"attn1", "attn2"}
    assert all(v.float().abs().max() > 0 for k, v in saved.items() if "lora_B" in k)
    # diffusers' own LTX-2 conversion (the original names → diffusers') changes nothing but
    # the prefix: the keys are the names ComfyUI's and Lightricks' loaders use
    converted = LTX2Pipeline.lora_state_dict(str(result.lora_file))
    assert set(converted) == {"transformer." + k.removeprefix(LORA_PREFIX) for k in saved}
    with safe_open(result.lora_file, "pt") as f:
        meta = f.metadata()
    assert (meta["trainingType"], meta["triggerPhrase"], meta["rank"],
            meta["baseModelVersion"]) == ("extend-suffix", "LEADIN", "16", "2.0")
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


def test_text_cache_is_bf16_real_tokens_and_trains_the_same(datasets, tiny_model, tmp_path):
    archive, work = datasets["one", False]
    caption = "a square glides"
    cached = load_text(work / "cache", caption)
    fresh = encode_texts(tiny_model, [caption], CPU, SETTINGS.max_sequence_length)[
        text_key(caption)]
    assert cached.dtype == torch.bfloat16 and torch.equal(cached, fresh)
    assert cached.shape[0] == 3  # the caption's own tokens: no padding is stored
    # what a padded fp32 cache would hold for the same prompt
    padded_fp32 = SETTINGS.max_sequence_length * cached.shape[1] * 4
    stored = cached.numel() * cached.element_size()
    assert padded_fp32 >= 4 * stored, (padded_fp32, stored)
    # the loss from the bf16 cache matches the loss from full-precision features
    from diffusers import LTX2Pipeline

    from ltx_trainer.model.loader import load_component

    pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, connectors=None,
                        transformer=None, vocoder=None,
                        text_encoder=load_component(tiny_model, "text_encoder", CPU),
                        tokenizer=load_component(tiny_model, "tokenizer", CPU))
    embeds, mask, _, _ = pipe.encode_prompt(caption, do_classifier_free_guidance=False,
                                            max_sequence_length=32, device=CPU)
    full = embeds[0][mask[0].bool()].float()
    trainer = Trainer(make_spec(archive), tiny_model, tmp_path, CPU, SETTINGS)
    trainer._load()
    meta, sample = _first_sample(work)
    inputs = trainer.prepare(sample, SuffixWindow(meta["frames"], meta["frameRate"], 8),
                             step_generator(0, 3))
    with torch.no_grad():
        from_cache = trainer.loss(inputs, cached)["total"].item()
        from_full = trainer.loss(inputs, full)["total"].item()
    assert from_cache == pytest.approx(from_full, rel=1e-2)


def test_a_distilled_checkpoint_is_refused_before_anything_is_encoded(archives, tiny_model,
                                                                      tmp_path):
    model = tmp_path / "distilled"
    shutil.copytree(tiny_model, model)
    config_path = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "use_dynamic_shifting": False}))
    with pytest.raises(InvalidInput, match=r"does not use dynamic shifting.*distilled"):
        Trainer(make_spec(archives["one"]), model, tmp_path / "work", CPU, SETTINGS)
    assert not (tmp_path / "work").exists()


def test_a_diverging_run_fails_at_once_keeps_the_last_good_checkpoint_and_bills_nothing(
        datasets, tiny_model, tmp_path):
    archive, source = datasets["one", False]
    # 1e4 is the smallest power of ten that takes the tiny fp32 model to NaN (1e3 trains
    # on); it is past any sane spec bound, so it is set on the parsed spec and the loop's
    # own guard is what stops the run
    spec = make_spec(archive).model_copy(update={"learning_rate": 1e4})
    settings = TrainSettings(max_sequence_length=32, checkpoint_every=1, keep_checkpoints=1)
    work = fresh_work(source, tmp_path / "w")
    with pytest.raises(Diverged) as failure:
        Trainer(spec, tiny_model, work, CPU, settings).train(work / "dataset")
    message = failure.value.message
    step = int(message.split("at step ")[1].split(":")[0])
    assert 1 < step < 100
    assert "the loss is nan" in message or "the loss is inf" in message
    assert "lower learningRate" in message and "(10000)" in message
    assert not (work / "outputs").exists()  # no LoRA from the bad state
    [kept] = list((work / "checkpoints").glob("step-*"))
    assert kept.name == f"step-{step - 1:06d}"  # the last good step, not the diverged one
    assert all(torch.isfinite(t.float()).all() for t in load_file(kept / "lora.safetensors")
               .values())

    # through the stages: a failed result with the reason, and 0 billed
    store = tmp_path / "store"
    ctx = JobContext(spec=spec, store=open_store(store.as_uri()), run="local/diverge/1",
                     work_dir=tmp_path / "run", model=tiny_model,
                     fetch=FetchPolicy(allow_file_urls=True), train_settings=settings, device=CPU)
    result = run_local(ctx)[-1]
    assert (result.stage, result.outcome, result.reason) == ("train", "Failed", "Diverged")
    assert result.billable_units == 0 and "lower learningRate" in result.message
    assert not [p for p in store.rglob("lora.safetensors") if "outputs" in p.parts]
