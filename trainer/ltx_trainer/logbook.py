"""The train stage's log book: the loss curves a person looks at.

Every optimizer step's report goes to TensorBoard event files (`logs/`: loss and sigma
per modality, learning rate, gradient norm, steps/s) and to `loss.csv`; the previews
rendered along the way go to TensorBoard as frame strips; when training ends,
`loss.png` charts the losses, raw and smoothed, and the validation loss. Each validation
loss goes to TensorBoard (`validation/…`) and `validation.csv`, which is written again from
the run's whole history each time (a resumed run's history comes from its checkpoint).
A run resumed from a checkpoint redoes
the steps after it: the rows of those steps are dropped from the CSV and TensorBoard is
told to hide their events (`purge_step`), so every step appears once.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .training.trainer import StepReport
from .training.validation import Evaluation

LOGS, TABLE, CHART = "logs", "loss.csv", "loss.png"
VALIDATION_TABLE = "validation.csv"
#: Weight of the chart's exponential moving average (debiased, as TensorBoard smooths).
SMOOTHING = 0.9
#: Frames in a preview's strip, and their height in pixels.
STRIP_FRAMES, STRIP_HEIGHT = 8, 96


def columns(progress: StepReport) -> list[str]:
    """The CSV's columns for a run that reports like `progress`."""
    losses = sorted(progress.losses, key=lambda m: (m != "total", m))
    return (["step", *(f"loss_{m}" for m in losses or ["total"]),
             *(f"sigma_{m}" for m in sorted(progress.sigmas)),
             "learning_rate", "grad_norm", "steps_per_second"])


def _row(progress: StepReport) -> dict[str, float]:
    row: dict[str, float] = {"step": progress.step, "learning_rate": progress.learning_rate,
                             "grad_norm": progress.grad_norm,
                             "steps_per_second": progress.steps_per_second}
    row.update({f"loss_{m}": v for m, v in (progress.losses or {"total": progress.loss}).items()})
    row.update({f"sigma_{m}": v for m, v in progress.sigmas.items()})
    return row


def validation_row(evaluation: Evaluation, sigmas: tuple[float, ...]) -> dict[str, float]:
    """`validation.csv`'s row of one evaluation: the loss per modality averaged over the
    noise levels, then at each level."""
    names = sorted(evaluation.losses, key=lambda m: (m != "total", m))
    row: dict[str, float] = {"step": evaluation.step}
    row.update({f"loss_{m}": round(evaluation.mean(m), 6) for m in names})
    for m in names:
        row.update({f"loss_{m}_sigma_{s:.2f}": v
                    for s, v in zip(sigmas, evaluation.losses[m], strict=True)})
    row.update(held_out=int(evaluation.held_out), windows=evaluation.windows)
    return row


def read_table(path: Path) -> list[dict[str, float]]:
    """The rows of a `loss.csv`, numbers as floats (steps as ints)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: int(v) if k == "step" else float(v) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, debiased so that the first points are not pulled
    toward zero."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


class Logbook:
    """Writes the loss curves of one run into `folder` (the stage's outputs)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.logs, self.table, self.chart = folder / LOGS, folder / TABLE, folder / CHART
        self.validation_table = folder / VALIDATION_TABLE
        self._writer: Any = None
        self._fields: list[str] | None = None

    def _open(self, first: StepReport) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_table(self.table) if r["step"] < first.step]
        fields = columns(first)
        if kept:  # a resumed run: keep the columns it started with
            with self.table.open(newline="", encoding="utf-8") as f:
                fields = next(csv.reader(f))
        partial = self.table.with_name(self.table.name + ".part")
        with partial.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        partial.replace(self.table)
        self._fields = fields
        # events at or after this step, left by an attempt that stopped, are hidden
        self._writer = SummaryWriter(str(self.logs), purge_step=first.step if kept or
                                     first.step > 1 else None, flush_secs=30)

    def record(self, progress: StepReport) -> None:
        """One optimizer step's report."""
        if self._writer is None:
            self._open(progress)
        step, add = progress.step, self._writer.add_scalar
        for modality, value in (progress.losses or {"total": progress.loss}).items():
            add(f"loss/{modality}", value, step)
        for modality, value in progress.sigmas.items():
            add(f"sigma/{modality}", value, step)
        add("learning_rate", progress.learning_rate, step)
        add("grad_norm", progress.grad_norm, step)
        add("steps_per_second", progress.steps_per_second, step)
        with self.table.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self._fields, extrasaction="ignore").writerow(_row(progress))

    def record_validation(self, history: list[Evaluation], sigmas: tuple[float, ...]) -> None:
        """A validation loss (the last of `history`, every one so far)."""
        latest = history[-1]
        if self._writer is not None:
            for name in latest.losses:
                self._writer.add_scalar(f"validation/{name}", latest.mean(name), latest.step)
                for sigma, value in zip(sigmas, latest.losses[name], strict=True):
                    self._writer.add_scalar(f"validation/{name}/sigma_{sigma:.2f}", value,
                                            latest.step)
        rows = [validation_row(e, sigmas) for e in history]
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.validation_table.with_name(self.validation_table.name + ".part")
        with partial.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, list(rows[-1]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        partial.replace(self.validation_table)

    def preview(self, step: int, reel: Path | None) -> None:
        """A rendered preview reel, as a strip of frames across it."""
        if reel is None or self._writer is None:
            return
        self._writer.add_image("previews/reel", frame_strip(reel), step, dataformats="HWC")
        self._writer.flush()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> Path | None:
        """Close the event files and draw `loss.png`; the chart's path (None when no
        step was recorded)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        rows = read_table(self.table)
        return draw_chart(rows, self.chart, read_table(self.validation_table)) if rows else None


def frame_strip(video: Path, count: int = STRIP_FRAMES, height: int = STRIP_HEIGHT
                ) -> np.ndarray:
    """`count` frames spread evenly over `video`, scaled to `height`, side by side:
    (height, width, 3) uint8."""
    import av

    with av.open(str(video)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    width = max(1, round(frames[0].width * height / frames[0].height))
    return np.concatenate([np.asarray(frames[i].convert("RGB").resize((width, height)))
                           for i in picks], axis=1)


def draw_chart(rows: list[dict[str, float]], dest: Path,
               validation: list[dict[str, float]] | None = None) -> Path:
    """The losses per step, raw (thin) and smoothed (bold), and the validation loss at
    each step it was computed (dashed, with points), as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r["step"] for r in rows]
    names = [k for k in rows[0] if k.startswith("loss_")]
    figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = {"loss_total": "#222222", "loss_video": "#1f77b4", "loss_audio": "#d62728"}
    for name in names:
        values = [r.get(name, math.nan) for r in rows]
        colour = colours.get(name, None)
        raw = axes.plot(steps, values, linewidth=0.8, alpha=0.3, color=colour)[0]
        axes.plot(steps, smooth(values), linewidth=2, color=raw.get_color(),
                  label=name.removeprefix("loss_"))
    if validation:
        where = "held-out clips" if validation[-1].get("held_out") else "training windows"
        axes.plot([r["step"] for r in validation], [r["loss_total"] for r in validation],
                  linestyle="--", marker="o", markersize=4, linewidth=1.5, color="#2ca02c",
                  label=f"validation ({where}, fixed noise)")
    last = smooth([r[names[0]] for r in rows])[-1]
    axes.set_title(f"Training loss over {steps[-1]} steps (smoothed {names[0][5:]}: {last:.4f})")
    axes.set_xlabel("step")
    axes.set_ylabel("flow-matching loss")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", title="bold: smoothed, thin: raw", title_fontsize="small")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    figure.savefig(partial, format="png")
    partial.replace(dest)
    return dest
