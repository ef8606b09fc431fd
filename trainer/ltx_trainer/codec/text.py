"""Text conditioning: Gemma features per prompt, their on-disk cache, and the left
padding that the connectors expect.

A prompt is encoded once through the public `LTX2Pipeline.encode_prompt` (the
pipeline's own tokenisation, left padding and stacking of every hidden layer) and
cached as its real tokens only, in bf16: the padding is made again at load time. On the
real model a token is 3,840 × 49 features, 0.38 MB in bf16, so a 50-token caption is
19 MB where a padded fp32 entry (1,024 tokens) would be 770 MB.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from ..model.loader import ModelLike

CACHE_DTYPE = torch.bfloat16
#: text tokens a prompt is padded or cut to unless a setting says otherwise
DEFAULT_TEXT_TOKENS = 1024


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@torch.no_grad()
def encode_texts(model: ModelLike, texts: list[str], device: torch.device,
                 max_sequence_length: int) -> dict[str, torch.Tensor]:
    """Gemma features per text (keyed by `text_key`): (real tokens, features), bf16, CPU."""
    from diffusers import LTX2Pipeline

    from ..model.loader import as_model

    model = as_model(model)
    tokenizer = model.load("tokenizer", device)
    text_encoder = model.load("text_encoder", device)
    pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, text_encoder=text_encoder,
                        tokenizer=tokenizer, connectors=None, transformer=None, vocoder=None)
    out = {}
    for text in texts:
        embeds, mask, _, _ = pipe.encode_prompt(
            text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
            device=device, dtype=text_encoder.dtype)
        out[text_key(text)] = embeds[0][mask[0].bool()].to(CACHE_DTYPE).cpu()
    del pipe, text_encoder
    return out


def save_texts(cache_dir: Path, features: dict[str, torch.Tensor]) -> None:
    (cache_dir / "text").mkdir(parents=True, exist_ok=True)
    for key, embeds in features.items():
        save_file({"embeds": embeds.to(CACHE_DTYPE).contiguous()},
                  cache_dir / "text" / f"{key}.safetensors")


def load_text(cache_dir: Path, text: str) -> torch.Tensor:
    return load_text_by_key(cache_dir, text_key(text))


def load_text_by_key(cache_dir: Path, key: str) -> torch.Tensor:
    return load_file(cache_dir / "text" / f"{key}.safetensors")["embeds"]


def pad_left(embeds: torch.Tensor, length: int, device: torch.device | str, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-token features (n, D) → left-padded (1, length, D) and its mask (1, length),
    as the tokenizer pads Gemma's prompts, on `device`."""
    embeds = embeds[-length:].to(device, dtype)
    real = embeds.shape[0]
    padded = torch.zeros(1, length, embeds.shape[-1], device=device, dtype=dtype)
    padded[0, length - real:] = embeds
    mask = torch.zeros(1, length, dtype=torch.long, device=device)
    mask[0, length - real:] = 1
    return padded, mask
