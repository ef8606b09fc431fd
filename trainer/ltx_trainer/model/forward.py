"""The one function that calls the LTX-2 transformer, with the profile's settings, and
the attention kernels it runs on.

Training and sampling both call `predict`; the profile decides the cross-modality
timestep and the prompt modulation, so no caller can get them wrong. Every tensor it
makes is on the transformer's device. It runs under bf16 autocast on a GPU (and for a
bf16 model on the CPU), so the fp32 LoRA weights enter bf16 matmuls and no activation
is upcast to their dtype.

Attention goes through PyTorch's SDPA (diffusers' native backend). Left to itself PyTorch
tries flash, then memory-efficient, then math, and cuDNN last; `auto` puts cuDNN's fused
attention first on a GPU (the fastest on Hopper), then flash, then memory-efficient (the
text cross-attention has a mask, which flash does not take). `AttentionKernels` records
which kernel each call ran.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .profile import ModelProfile

#: `auto`; `default` (PyTorch's own order); or one kernel alone
ATTENTION_BACKENDS = ("auto", "default", "cudnn", "flash", "efficient", "math")


def _sdpa_backends(name: str) -> list[Any]:
    from torch.nn.attention import SDPBackend

    return {"auto": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                     SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
            "cudnn": [SDPBackend.CUDNN_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION],
            "efficient": [SDPBackend.EFFICIENT_ATTENTION], "math": [SDPBackend.MATH]}[name]


@contextlib.contextmanager
def attention_kernels(backend: str, device: torch.device) -> Iterator[None]:
    """SDPA restricted to, and ordered by, `backend` (see ATTENTION_BACKENDS). `auto` off a
    GPU and `default` leave PyTorch's choice alone. The setting is process-wide, so it also
    holds in the backward's threads, where checkpointed blocks run their forward again."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}: choose one of "
                         f"{', '.join(ATTENTION_BACKENDS)}")
    if backend == "default" or (backend == "auto" and device.type != "cuda"):
        yield
        return
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(_sdpa_backends(backend), set_priority=True):
        yield


#: the aten operator each SDPA kernel runs as → its name
SDPA_KERNELS = {
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


class AttentionKernels(TorchDispatchMode):
    """Counts the SDPA kernels that run inside it: (kernel, query tokens, key tokens) →
    calls, forward only."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[str, int, int]] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        kernel = SDPA_KERNELS.get(func.overloadpacket.__name__)
        if kernel is not None:
            self.calls[(kernel, args[0].shape[-2], args[1].shape[-2])] += 1
        return func(*args, **(kwargs or {}))

    @property
    def kernels(self) -> set[str]:
        return {kernel for kernel, _, _ in self.calls}


@dataclass(frozen=True)
class Geometry:
    """Latent shape of one clip: video frames × height × width, audio latents, frame rate."""

    frames: int
    height: int
    width: int
    audio_frames: int
    fps: float

    @property
    def video_tokens(self) -> int:
        return self.frames * self.height * self.width


@dataclass
class TextContext:
    """Connector outputs for a batch: video and audio prompt features and their mask."""

    video: torch.Tensor
    audio: torch.Tensor
    mask: torch.Tensor

    def rows(self, index: slice) -> TextContext:
        return TextContext(self.video[index], self.audio[index], self.mask[index])

    def to(self, device: torch.device) -> TextContext:
        return TextContext(self.video.to(device), self.audio.to(device), self.mask.to(device))


@dataclass
class StreamState:
    """One modality's tokens and noise levels: `timesteps` per token (0 on kept tokens)
    and `sigma`, the stream's noise level, all in [0, 1]."""

    latents: torch.Tensor  # (B, tokens, channels)
    timesteps: torch.Tensor  # (B, tokens)
    sigma: float


def connect_text(connectors: Any, embeds: torch.Tensor, mask: torch.Tensor) -> TextContext:
    """Left-padded Gemma features (B, L, D) and mask → the connectors' outputs."""
    video, audio, text_mask = connectors(embeds.to(connectors.dtype), mask, padding_side="left")
    return TextContext(video, audio, text_mask)


def predict(transformer: Any, profile: ModelProfile, video: StreamState, audio: StreamState,
            text: TextContext, geometry: Geometry, *, isolate: bool,
            stg: bool = False, attention: str = "auto", sampling: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity predictions (video, audio) for a batch.

    `isolate` turns the audio↔video attention off (a video-only model, or the modality
    guidance pass); `stg` perturbs the profile's STG blocks; `attention` picks the SDPA
    kernels (ATTENTION_BACKENDS); `sampling` is a preview's or `extend`'s call, which marks
    latent frame 0 where the profile says inference does (`first_frame_marker`).
    """
    device, dtype = transformer.device, transformer.dtype
    batch = video.latents.shape[0]
    scale = profile.timestep_scale
    video_coords = transformer.rope.prepare_video_coords(
        batch, geometry.frames, geometry.height, geometry.width, device, fps=geometry.fps)
    audio_coords = transformer.audio_rope.prepare_audio_coords(batch, geometry.audio_frames,
                                                               device)
    keyframes = first_frame_mask(batch, geometry, device) if (
        sampling and profile.first_frame_marker) else None
    autocast = device.type == "cuda" or (device.type == "cpu" and dtype == torch.bfloat16)
    with torch.autocast(device.type if autocast else "cpu", dtype=torch.bfloat16,
                        enabled=autocast), attention_kernels(attention, device):
        video_out, audio_out = transformer(
            hidden_states=video.latents.to(dtype),
            audio_hidden_states=audio.latents.to(dtype),
            encoder_hidden_states=text.video, audio_encoder_hidden_states=text.audio,
            encoder_attention_mask=text.mask, audio_encoder_attention_mask=text.mask,
            timestep=video.timesteps * scale, audio_timestep=audio.timesteps * scale,
            sigma=torch.full((batch,), video.sigma * scale, device=device),
            audio_sigma=torch.full((batch,), audio.sigma * scale, device=device),
            num_frames=geometry.frames, height=geometry.height, width=geometry.width,
            fps=geometry.fps, audio_num_frames=geometry.audio_frames,
            video_coords=video_coords, audio_coords=audio_coords,
            isolate_modalities=isolate,
            spatio_temporal_guidance_blocks=list(profile.guidance.stg_blocks) if stg else None,
            use_cross_timestep=profile.use_cross_timestep, video_keyframes_mask=keyframes,
            return_dict=False,
        )
    return video_out, audio_out


def first_frame_mask(batch: int, geometry: Geometry, device: torch.device) -> torch.Tensor:
    """(B, video tokens, 1): 1 on latent frame 0's tokens, which the causal VAE makes from
    one pixel frame. ltx-core's inference marks them in every generation (its video latent
    state's keyframes mask), so that LTX-2.5 adds its keyframe embedding to them; the
    tokens are packed frame by frame, so frame 0 is the first height × width."""
    mask = torch.zeros(batch, geometry.video_tokens, 1, device=device)
    mask[:, :geometry.height * geometry.width] = 1.0
    return mask
