"""The suffix masks: which tokens are the clean closing window, in training and sampling
alike. 1 marks a kept (clean, timestep 0, no loss) token, 0 a generated one."""

from __future__ import annotations

import torch

from ltx_contract.suffix import SuffixWindow


def video_keep_mask(suffix: SuffixWindow, frames: int, height: int, width: int,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, F·H·W, 1): 1 on the tokens of the last `suffix_latent_frames` latent frames
    (frame-major packing)."""
    mask = torch.zeros(frames, height * width, device=device)
    mask[frames - suffix.suffix_latent_frames:] = 1
    return mask.reshape(1, -1, 1)


def audio_keep_mask(suffix: SuffixWindow, length: int, device: torch.device | str = "cpu"
                    ) -> torch.Tensor:
    """(1, length, 1): 1 on the audio latents of the closing window."""
    mask = torch.zeros(1, length, 1, device=device)
    mask[:, suffix.first_suffix_audio_latent:] = 1
    return mask
