"""Which video decoder renders previews and `extend`: the VAE's convolutional decoder, or
LTX-2.5's diffusion decoder (a small diffusion model over pixels, better and far heavier).

Both read the same latents, so the choice changes nothing upstream. A model that ships one
decoder uses it; where both ship, the diffusion decoder runs on a GPU with room for it and
the convolutional one everywhere else (its peak is the largest of a preview, and the CPU
has no fast neighbourhood attention for it). The choice is logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from .device import device_memory_gib
from .profile import CONVOLUTIONAL, DIFFUSION, ModelProfile

if TYPE_CHECKING:
    from .loader import Model

log = logging.getLogger(__name__)

#: GPU memory from which the diffusion decoder is used where both decoders ship
DIFFUSION_DECODER_MIN_GIB = 64
DIFFUSION_DECODER = "diffusion_decoder"


def choose_decoder(profile: ModelProfile, device: torch.device) -> str:
    """`CONVOLUTIONAL` or `DIFFUSION`, as the module docstring says, and logged."""
    if DIFFUSION not in profile.decoders:
        choice, why = CONVOLUTIONAL, "the only video decoder the model ships"
    elif CONVOLUTIONAL not in profile.decoders:
        choice, why = DIFFUSION, "the only video decoder the model ships"
    else:
        memory = device_memory_gib(device) or 0.0
        big = memory >= DIFFUSION_DECODER_MIN_GIB
        choice = DIFFUSION if big else CONVOLUTIONAL
        why = (f"both ship and the {device.type} has {memory:.0f} GiB "
               f"({'at least' if big else 'under'} {DIFFUSION_DECODER_MIN_GIB} GiB)")
    log.info("video decoder: %s (%s)", choice, why)
    return choice


def load_video_decoder(model: Model, device: torch.device) -> Any | None:
    """The diffusion decoder when it is the one chosen, else None (the VAE decodes)."""
    if choose_decoder(model.profile, device) != DIFFUSION:
        return None
    return model.load(DIFFUSION_DECODER, device)
