"""Clips for the tests: the product's own sample-clip maker, a maker of clips stored
turned (as phones store portrait video), and a frame reader."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ltx_trainer.sample_data import make_clip

__all__ = ["make_clip", "make_turned_clip", "quadrant_means", "read_frames"]


def read_frames(path: Path) -> np.ndarray:
    """All frames as (n, h, w, 3) uint8."""
    with av.open(str(path)) as inp:
        return np.stack([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images or clips, in dB (99 when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def make_turned_clip(path: Path, clockwise: int, *, displayed: tuple[int, int] = (96, 160),
                     how: str = "matrix", mirrored: bool = False, seconds: float = 1.0,
                     fps: int = 24) -> Path:
    """A clip that shows, as displayed, a white top-left quadrant on black, stored turned:
    the coded frame must be turned `clockwise` degrees (then mirrored, if `mirrored`) to
    be shown. `how` is "matrix" (display-matrix side data) or "tag" (the legacy `rotate`
    metadata, which has no mirror). `displayed` is (width, height) as shown."""
    width, height = displayed
    shown = np.zeros((height, width, 3), np.uint8)
    shown[:height // 2, :width // 2] = 255
    coded = shown[:, ::-1] if mirrored else shown
    coded = np.ascontiguousarray(np.rot90(coded, k=clockwise // 90))  # undo the turn
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width = coded.shape[:2]
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "18"}
        if how == "matrix":  # PyAV counts counter-clockwise
            video.set_display_rotation(-clockwise, hflip=mirrored)
        else:
            video.metadata["rotate"] = str(clockwise)
        frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
        for _ in range(round(seconds * fps)):
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def quadrant_means(frame: np.ndarray) -> list[float]:
    """Mean brightness of a frame's quadrants: top-left, top-right, bottom-left,
    bottom-right."""
    h, w = frame.shape[0] // 2, frame.shape[1] // 2
    gray = frame.mean(axis=-1)
    return [float(gray[r:r + h, c:c + w].mean()) for r in (0, h) for c in (0, w)]
