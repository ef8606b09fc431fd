"""The held-out validation loss: which clips are held out, a figure that is the same for
the same LoRA, that survives a resume, and that rises when a tiny dataset is overfitted."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx_contract.manifest import Manifest, held_out_sources
from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.dataset import FetchPolicy, PrepareSettings, prepare_dataset
from ltx_trainer.logbook import read_table
from ltx_trainer.stages.context import JobContext
from ltx_trainer.stages.dispatch import run_local
from ltx_trainer.stages.train import fetch_train_inputs
from ltx_trainer.store import open_store
from ltx_trainer.training.preprocess import encode_dataset
from ltx_trainer.training.trainer import Interrupted, Trainer, TrainerHooks, TrainSettings
from ltx_trainer.training.validation import (
    MAX_TRAINING_WINDOWS,
    SIGMAS,
    Validator,
    windows,
)

from harness.media_factory import make_clip

CPU = torch.device("cpu")
FILES = PrepareSettings(fetch=FetchPolicy(allow_file_urls=True))
NAMES = ["a.mp4", "b.mp4", "c.mp4"]


def make_spec(archive: Path, **fields):
    return parse_spec({"trainingDataUrl": archive.as_uri(), "numberOfSteps": 100,
                       "numberOfFrames": 9, "resolution": "low", "aspectRatio": "16:9",
                       "rank": 16, "learningRate": 1e-2, "heldOutShare": 0.34, **fields})


def noise_clip(path: Path, seconds: float, fps: int = 24, size: tuple[int, int] = (160, 96)
               ) -> Path:
    """Random pixels in every frame: nothing like the gliding squares of `make_clip`."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for _ in range(round(seconds * fps)):
            frame = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def archive_of(root: Path, seconds: dict[str, float], unlike: str | None = None) -> Path:
    """A zip of gliding-square clips of the given lengths (`unlike`: that one is noise)."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i, (name, length) in enumerate(seconds.items()):
            clip = (noise_clip(root / name, length) if name == unlike else
                    make_clip(root / name, length, fps=24, size=(160, 96),
                              tone_hz=300.0 * (i + 1)))
            z.write(clip, name)
            z.writestr(name.replace(".mp4", ".txt"), "a square glides")
    return archive


def test_whole_clips_are_held_out_by_name_at_least_one_never_the_only_one():
    clips = [f"clips/shot{i:02d}.mp4" for i in range(20)]
    held = held_out_sources(clips, 0.1)
    assert len(held) == 2 and held <= set(clips)
    assert held_out_sources(list(reversed(clips)), 0.1) == held  # not by the archive's order
    assert held_out_sources(clips + clips[:3], 0.1) == held  # by clip, not by window
    assert len(held_out_sources(clips[:6], 0.1)) == 1  # at least one
    assert len(held_out_sources(clips[:3], 0.5)) == 2  # never every clip
    assert len(held_out_sources(clips[:4], 0.5)) == 2
    assert held_out_sources(clips[:2], 0.5) == set()  # too few to hold one out
    assert held_out_sources(clips[:1], 0.5) == set()
    assert held_out_sources(clips, 0.0) == set()  # turned off
    assert held_out_sources(clips[:10], 0.1) != held_out_sources(clips[10:], 0.1)


def test_prepare_marks_every_window_of_a_held_out_clip_and_says_when_none_is(tmp_path):
    held = held_out_sources(NAMES, 0.34)
    longer = next(iter(held))  # the held-out clip gives two windows: both held out
    archive = archive_of(tmp_path / "three", {n: 0.8 if n == longer else 0.5 for n in NAMES})
    prepare_dataset(make_spec(archive), tmp_path / "work", FILES)
    manifest = Manifest.read(tmp_path / "work" / "dataset")
    assert {s.source for s in manifest.samples} == set(NAMES)  # held-out clips are listed
    assert {s.source for s in manifest.held_out_samples} == held
    assert len(manifest.held_out_samples) == 2 and len(manifest.training_samples) == 2
    assert not any("held out" in w for w in manifest.warnings)
    # two clips: none held out, and the manifest says where the figure comes from
    two = archive_of(tmp_path / "two", {n: 0.5 for n in NAMES[:2]})
    prepare_dataset(make_spec(two), tmp_path / "work2", FILES)
    small = Manifest.read(tmp_path / "work2" / "dataset")
    assert small.held_out_samples == []
    assert any("none is held out" in w and "training windows" in w for w in small.warnings)
    # turned off: nothing held out, nothing to warn about
    prepare_dataset(make_spec(archive, heldOutShare=0), tmp_path / "work3", FILES)
    off = Manifest.read(tmp_path / "work3" / "dataset")
    assert off.held_out_samples == [] and not any("held out" in w for w in off.warnings)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_model):
    """Three one-window clips, one held out, prepared and encoded."""
    root = tmp_path_factory.mktemp("held-out")
    archive = archive_of(root / "media", {n: 0.5 for n in NAMES})
    spec = make_spec(archive)
    prepare_dataset(spec, root / "work", FILES)
    encode_dataset(root / "work" / "dataset", root / "work" / "cache", tiny_model, CPU,
                   with_audio=False, max_sequence_length=32)
    return spec, root / "work"


def fresh(source: Path, dest: Path) -> Path:
    for part in ("dataset", "cache"):
        shutil.copytree(source / part, dest / part)
    return dest


def test_the_figure_is_the_same_for_the_same_lora_and_a_resume_keeps_the_held_out_set(
        encoded, tiny_model, tmp_path):
    spec, source = encoded
    spec = spec.model_copy(update={"number_of_steps": 12})  # short: what is compared is exact
    settings = TrainSettings(max_sequence_length=32, checkpoint_every=6, validation_every=3)
    held = {s.id for s in Manifest.read(source / "dataset").held_out_samples}

    whole = Trainer(spec, tiny_model, fresh(source, tmp_path / "whole"), CPU, settings)
    uninterrupted = whole.train(tmp_path / "whole" / "dataset")
    assert {s["id"] for s in whole.validator.samples} == held and whole.validator.held_out
    assert [e.step for e in uninterrupted.validation] == [3, 6, 9, 12]
    assert all(e.windows == 1 and len(e.losses["total"]) == len(SIGMAS)
               for e in uninterrupted.validation)
    assert len({e.loss for e in uninterrupted.validation}) == 4  # it moves as the LoRA learns

    work = fresh(source, tmp_path / "resumed")
    with pytest.raises(Interrupted):
        Trainer(spec, tiny_model, work, CPU, settings).train(work / "dataset", stop_after=8)
    again = Trainer(spec, tiny_model, work, CPU, settings)  # from the checkpoint of step 6
    resumed = again.train(work / "dataset")
    assert {s["id"] for s in again.validator.samples} == held
    assert [e.to_dict() for e in resumed.validation] == [
        e.to_dict() for e in uninterrupted.validation]  # the history came from the checkpoint

    # a fixed checkpoint gives the same figure, every time, in a trainer of its own
    check = Trainer(spec, tiny_model, work, CPU, settings)
    check._load()
    index = json.loads((work / "cache" / "index.json").read_text())
    check.validator = Validator(*windows(index["samples"]), work / "cache")
    assert check._resume()[0] == 12
    first, second = check.validator.evaluate(check, 12), check.validator.evaluate(check, 12)
    assert first.losses == second.losses == uninterrupted.validation[-1].losses
    # the noise is fixed per level: a level's figure is not another's
    assert len(set(first.losses["total"])) == len(SIGMAS)


def test_each_figure_is_logged_and_the_best_steps_lora_is_kept_when_a_later_one_is_worse(
        tmp_path, tiny_model):
    """Two training clips (six windows) trained 100 steps at a high learning rate, the
    held-out clip unlike them (random pixels): the training loss falls, the held-out
    figure moves from one checkpoint to the next without following it (this run's lowest
    is before its last), and the LoRA of the best step is kept beside the last one.

    (On real clips the tiny random model does not overfit in a way a figure shows: its
    held-out loss keeps falling on every dataset tried — docs/training.md; the constructed
    case below does.)
    """
    held = next(iter(held_out_sources(NAMES, 0.34)))
    archive = archive_of(tmp_path / "media", {n: 1.2 for n in NAMES}, unlike=held)
    ctx = JobContext(spec=make_spec(archive), store=open_store(str(tmp_path / "out")),
                     run="local/overfit/1", work_dir=tmp_path / "work", model=tiny_model,
                     local_run=True, fetch=FetchPolicy(allow_file_urls=True),
                     train_settings=TrainSettings(max_sequence_length=32, checkpoint_every=50,
                                                  validation_every=10))
    result = run_local(ctx)[-1]
    assert result.succeeded, result.message
    outputs = tmp_path / "out" / "local" / "overfit" / "1" / "outputs"
    rows = read_table(outputs / "validation.csv")
    assert [r["step"] for r in rows] == list(range(10, 101, 10))
    assert all(r["held_out"] == 1 and r["windows"] == 3 for r in rows)  # one clip's windows
    held_out = [r["loss_total"] for r in rows]
    lowest = min(range(len(held_out)), key=held_out.__getitem__)
    steps = read_table(outputs / "loss.csv")
    training = [r["loss_total"] for r in steps]
    # the training loss falls (noisy per step: tens of steps averaged); the held-out
    # figure's lowest is before the last, so the best step's LoRA is kept
    assert np.mean(training[-20:]) < 0.8 * np.mean(training[:20]), training
    assert 0 < lowest < len(held_out) - 1, held_out
    assert held_out[-1] > held_out[lowest], held_out
    best_step = rows[lowest]["step"]
    figures = result.validation
    assert (figures.step, figures.best_step, figures.held_out) == (100, best_step, True)
    assert figures.loss == pytest.approx(held_out[-1], abs=1e-5)
    assert figures.best_loss == pytest.approx(held_out[lowest], abs=1e-5)
    assert f"best {figures.best_loss:.4f} at step {best_step}" in result.message
    # the best step's LoRA is kept beside the last one, its step in its metadata
    best = outputs / "lora_best.safetensors"
    assert result.artifacts.lora_best.endswith("/outputs/lora_best.safetensors")
    assert result.artifacts.validation_log.endswith("/outputs/validation.csv")
    with safe_open(best, "pt") as f, safe_open(outputs / "lora.safetensors", "pt") as last:
        assert json.loads(f.metadata()["steps"]) == best_step
        assert set(f.keys()) == set(last.keys())
        name = next(iter(f.keys()))
        assert not torch.equal(f.get_tensor(name), last.get_tensor(name))
    # it went to the store with the checkpoints: a pod that takes over gets it back
    next_pod = replace(ctx, work_dir=tmp_path / "next-pod")
    fetch_train_inputs(next_pod)
    kept = next_pod.work_dir / "train" / "checkpoints" / "best"
    assert json.loads((kept / "step.json").read_text()) == {"step": best_step}
    assert (kept / "lora.safetensors").read_bytes() == best.read_bytes()


def test_without_held_out_clips_the_figure_is_on_the_training_windows(encoded, tiny_model,
                                                                      tmp_path):
    spec, source = encoded
    work = fresh(source, tmp_path / "work")
    index = json.loads((work / "cache" / "index.json").read_text())
    for sample in index["samples"]:  # as prepared with heldOutShare 0
        sample["heldOut"] = False
    (work / "cache" / "index.json").write_text(json.dumps(index))
    seen = []
    trainer = Trainer(spec.model_copy(update={"number_of_steps": 4}), tiny_model, work, CPU,
                      TrainSettings(max_sequence_length=32, checkpoint_every=4),
                      hooks=TrainerHooks(validated=lambda e, history: seen.append(e)))
    result = trainer.train(work / "dataset")
    assert [(e.step, e.held_out, e.windows) for e in seen] == [(4, False, 3)]
    assert result.best_lora is None  # the best step is the last: no second LoRA


def test_the_windows_are_the_held_out_ones_else_a_few_training_ones_spread_evenly():
    marked = [{"id": f"{i:04d}", "heldOut": i in (3, 4)} for i in range(40)]
    assert windows(marked) == (marked[3:5], True)
    plain = [{"id": f"{i:04d}"} for i in range(40)]  # a cache from before heldOut
    chosen, held_out = windows(plain)
    assert not held_out and len(chosen) == MAX_TRAINING_WINDOWS
    assert chosen[0] is plain[0] and chosen[-1]["id"] >= "0035"  # over the whole dataset
    assert windows(plain[:3]) == (plain[:3], False)


def test_with_audio_each_modality_has_its_figure_at_each_level(tmp_path, tiny_model):
    archive = archive_of(tmp_path / "media", {n: 0.5 for n in NAMES})
    spec = make_spec(archive, withAudio=True)
    work = tmp_path / "work"
    prepare_dataset(spec, work, FILES)
    encode_dataset(work / "dataset", work / "cache", tiny_model, CPU, with_audio=True,
                   max_sequence_length=32)
    trainer = Trainer(spec, tiny_model, work, CPU, TrainSettings(max_sequence_length=32))
    trainer._load()
    index = json.loads((work / "cache" / "index.json").read_text())
    validator = Validator(*windows(index["samples"]), work / "cache")
    figure = validator.evaluate(trainer, 0)
    assert figure.held_out and set(figure.losses) == {"video", "audio", "total"}
    for level in range(len(SIGMAS)):
        assert figure.losses["total"][level] == pytest.approx(
            figure.losses["video"][level] + figure.losses["audio"][level], abs=2e-6)
    assert figure.mean("audio") > 0 and figure.mean("video") > 0


def test_a_lora_that_learns_one_window_by_heart_gets_a_rising_held_out_figure(
        encoded, tiny_model, tmp_path):
    """A constructed case of overfitting. One training window; the held-out window has the
    same closing frames and caption but the opposite lead-in, so whatever the LoRA learns of
    that one lead-in by heart is wrong for it. The latents are scaled to unit spread, as a
    real VAE's normalized latents are (the tiny random VAE's spread is about 0.2, so little
    that the noise swamps what the clips differ in). The training loss falls throughout;
    the held-out figure falls while the LoRA learns what both windows share, then rises."""
    spec, source = encoded
    work = fresh(source, tmp_path / "work")
    index = json.loads((work / "cache" / "index.json").read_text())
    train = next(s for s in index["samples"] if not s["heldOut"])
    held = next(s for s in index["samples"] if s["heldOut"])
    latents = work / "cache" / "latents"
    video = load_file(latents / f"{train['id']}.safetensors")["video"]
    video = video / video.std()
    suffix = SuffixWindow(train["frames"], train["frameRate"], spec.conditioning_frames)
    lead_in = slice(0, suffix.first_suffix_latent)
    opposite = video.clone()
    opposite[:, lead_in] = -video[:, lead_in]
    save_file({"video": video}, latents / f"{train['id']}.safetensors")
    save_file({"video": opposite}, latents / f"{held['id']}.safetensors")
    held.update({k: train[k] for k in ("caption", "frames", "frameRate", "suffix")})
    index["samples"] = [train, held]
    (work / "cache" / "index.json").write_text(json.dumps(index))

    seen = []
    trainer = Trainer(spec.model_copy(update={"number_of_steps": 200}), tiny_model, work, CPU,
                      TrainSettings(max_sequence_length=32, checkpoint_every=200,
                                    validation_every=20),
                      hooks=TrainerHooks(validated=lambda e, history: seen.append(e.loss)))
    result = trainer.train(work / "dataset")
    first, last = np.mean(result.losses[:30]), np.mean(result.losses[-30:])
    assert last < 0.7 * first, result.losses
    lowest = int(np.argmin(seen))
    assert 0 < lowest < len(seen) - 2, seen  # it fell, then it rose
    assert min(seen[lowest + 1:]) > seen[lowest] and seen[-1] > 1.2 * seen[lowest], seen
    assert result.validation[-1].step == 200 and result.best_lora is not None
