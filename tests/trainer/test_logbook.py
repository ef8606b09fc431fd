"""The log book: TensorBoard event files, loss.csv and loss.png from the loop's reports,
a resumed run's steps once each, previews as frame strips."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ltx_trainer.logbook import Logbook, frame_strip, read_table, smooth
from ltx_trainer.preview.reel import write_video
from ltx_trainer.training.trainer import StepReport

TOTAL = 60


def report(step: int, audio: bool = True) -> StepReport:
    """What the loop reports for `step`: a falling, noisy loss per modality."""
    rng = np.random.default_rng(step)
    video = 1.0 / math.sqrt(step) + 0.1 * rng.random()
    losses = {"video": video, "total": video}
    sigmas = {"video": float(rng.random())}
    if audio:
        losses["audio"] = 0.5 / math.sqrt(step) + 0.1 * rng.random()
        losses["total"] = video + losses["audio"]
        sigmas["audio"] = float(rng.random())
    return StepReport(step, TOTAL, losses["total"], 2.0, (TOTAL - step) / 2.0, losses=losses,
                    sigmas=sigmas, learning_rate=1e-4 * min(1, step / 10), grad_norm=0.5)


def events(folder) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_every_step_goes_to_tensorboard_the_table_and_the_chart(tmp_path):
    book = Logbook(tmp_path)
    for step in range(1, TOTAL + 1):
        book.record(report(step))
    chart = book.close()
    rows = read_table(tmp_path / "loss.csv")
    with (tmp_path / "loss.csv").open() as f:
        assert next(csv.reader(f)) == [
            "step", "loss_total", "loss_audio", "loss_video", "sigma_audio", "sigma_video",
            "learning_rate", "grad_norm", "steps_per_second"]
    assert [r["step"] for r in rows] == list(range(1, TOTAL + 1))
    assert rows[4]["loss_audio"] == pytest.approx(report(5).losses["audio"])
    assert rows[4]["learning_rate"] == pytest.approx(5e-5)
    scalars = events(tmp_path / "logs")
    assert set(scalars.Tags()["scalars"]) == {
        "loss/total", "loss/video", "loss/audio", "sigma/video", "sigma/audio",
        "learning_rate", "grad_norm", "steps_per_second"}
    video = scalars.Scalars("loss/video")
    assert [e.step for e in video] == list(range(1, TOTAL + 1))
    assert video[9].value == pytest.approx(report(10).losses["video"], rel=1e-6)
    assert chart == tmp_path / "loss.png" and chart.stat().st_size < 200_000
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size == (800, 450)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    # the curves are drawn in their colours (total dark grey, video blue, audio red)
    for colour in ((0x22, 0x22, 0x22), (0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)):
        assert (np.abs(pixels.astype(int) - colour).sum(axis=1) < 30).sum() > 200, colour


def test_a_resumed_run_has_each_step_once(tmp_path):
    first = Logbook(tmp_path)
    for step in range(1, 46):  # a checkpoint at 40, then killed after step 45
        first.record(report(step))
    first.flush()
    second = Logbook(tmp_path)  # the next pod resumes from the checkpoint at step 40
    for step in range(41, TOTAL + 1):
        second.record(report(step))
    second.close()
    rows = read_table(tmp_path / "loss.csv")
    assert [r["step"] for r in rows] == list(range(1, TOTAL + 1))
    steps = [e.step for e in events(tmp_path / "logs").Scalars("loss/total")]
    assert steps == list(range(1, TOTAL + 1))  # the killed attempt's 41…45 are purged


def test_a_video_only_run_charts_what_it_trains(tmp_path):
    book = Logbook(tmp_path)
    for step in range(1, 11):
        book.record(report(step, audio=False))
    book.close()
    assert list(read_table(tmp_path / "loss.csv")[0]) == [
        "step", "loss_total", "loss_video", "sigma_video", "learning_rate", "grad_norm",
        "steps_per_second"]
    assert "loss/audio" not in events(tmp_path / "logs").Tags()["scalars"]
    assert Logbook(tmp_path / "nothing").close() is None  # no step, no chart


def test_previews_go_to_tensorboard_as_frame_strips(tmp_path):
    frames = np.zeros((25, 64, 96, 3), np.uint8)
    frames[:, :, :, 0] = np.linspace(0, 240, 25, dtype=np.uint8)[:, None, None]  # red ramp
    reel = write_video(frames, 24, tmp_path / "reel.mp4")
    strip = frame_strip(reel, count=5, height=32)
    assert strip.shape == (32, 5 * 48, 3)
    reds = [strip[:, i * 48:(i + 1) * 48, 0].mean() for i in range(5)]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 150  # spread over the whole reel
    book = Logbook(tmp_path / "run")
    book.record(report(1))
    book.preview(1, reel)
    book.preview(1, None)  # a training without validation clips: nothing
    book.close()
    images = events(tmp_path / "run" / "logs").Images("previews/reel")
    assert [(i.step, i.width, i.height) for i in images] == [(1, 8 * 144, 96)]


def test_smoothing_is_debiased():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([0.0, 10.0], weight=0.5) == pytest.approx([0.0, 10 * 0.5 / 0.75])


def test_the_validation_loss_goes_to_tensorboard_its_table_and_the_chart(tmp_path):
    from ltx_trainer.training.validation import SIGMAS, Evaluation

    def evaluation(step: int, video: float) -> Evaluation:
        levels = [video * (1 + i / 10) for i in range(len(SIGMAS))]
        audio = [v / 2 for v in levels]
        return Evaluation(step, {"video": levels, "audio": audio,
                                 "total": [v + a for v, a in zip(levels, audio, strict=True)]},
                          held_out=True, windows=3)

    book = Logbook(tmp_path)
    history = []
    for step in range(1, TOTAL + 1):
        book.record(report(step))
        if step % 20 == 0:  # falls, then rises: the chart's dashed line follows it
            history.append(evaluation(step, {20: 0.8, 40: 0.6, 60: 0.9}[step]))
            book.record_validation(history, SIGMAS)
    with (tmp_path / "validation.csv").open() as f:
        header = next(csv.reader(f))
    assert header[:4] == ["step", "loss_total", "loss_audio", "loss_video"]
    assert "loss_video_sigma_0.10" in header and "loss_total_sigma_0.95" in header
    assert header[-2:] == ["held_out", "windows"]
    rows = read_table(tmp_path / "validation.csv")
    assert [r["step"] for r in rows] == [20, 40, 60]
    assert rows[1]["loss_total"] == pytest.approx(history[1].loss)
    assert rows[1]["loss_video_sigma_0.40"] == pytest.approx(0.6 * 1.1)
    # a resumed run's history (from its checkpoint) replaces what a stopped pod wrote
    book.record_validation([*history[:1], evaluation(40, 0.7)], SIGMAS)
    assert [(r["step"], round(r["loss_video"], 4)) for r in read_table(
        tmp_path / "validation.csv")] == [(20, round(history[0].mean("video"), 4)),
                                          (40, round(evaluation(40, 0.7).mean("video"), 4))]
    book.record_validation(history, SIGMAS)
    chart = book.close()
    scalars = events(tmp_path / "logs")
    assert {"validation/total", "validation/video", "validation/audio",
            "validation/video/sigma_0.10", "validation/audio/sigma_0.95"} <= set(
        scalars.Tags()["scalars"])
    assert [round(e.value, 4) for e in scalars.Scalars("validation/total")][-1] == round(
        history[-1].loss, 4)
    with Image.open(chart) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    green = (0x2C, 0xA0, 0x2C)  # the validation loss's dashed line and points
    assert (np.abs(pixels.astype(int) - green).sum(axis=1) < 30).sum() > 100
