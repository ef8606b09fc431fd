"""Clips for the tests: the product's own sample-clip maker, plus a frame reader."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ltx_trainer.sample_data import make_clip

__all__ = ["make_clip", "read_frames"]


def read_frames(path: Path) -> np.ndarray:
    """All frames as (n, h, w, 3) uint8."""
    with av.open(str(path)) as inp:
        return np.stack([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)])
