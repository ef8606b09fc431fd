"""Reading a fitted clip into the pixel tensor the video VAE takes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch


def read_video(path: Path) -> torch.Tensor:
    """(1, 3, frames, height, width) float32 in [-1, 1], on the CPU."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return video.unsqueeze(0)
