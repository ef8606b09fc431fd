"""Encoding the prepared dataset once, into an on-disk cache.

Video latents are normalized as the diffusers LTX-2 pipelines do; audio goes waveform →
log-mel → audio VAE → packed and normalized; captions go through Gemma once each (the
connectors run in the training step). The text encoder and the VAEs are released
before training starts, and a resumed run finds the cache and does not encode again.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ltx_contract.suffix import audio_latent_frames

from ..dataset.media import read_wav
from .audio import log_mel

log = logging.getLogger(__name__)
INDEX = "index.json"


def _pipeline_class() -> Any:
    from diffusers import LTX2Pipeline

    return LTX2Pipeline


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def read_video(path: Path) -> torch.Tensor:
    """(1, 3, frames, height, width) in [-1, 1]."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return video.unsqueeze(0)


@torch.no_grad()
def encode_video(vae: Any, video: torch.Tensor) -> torch.Tensor:
    """Normalized latents (channels, frames, height, width)."""
    latents = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode()
    latents = _pipeline_class()._normalize_latents(
        latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return latents[0].float().cpu()


@torch.no_grad()
def encode_audio(audio_vae: Any, waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Packed, normalized audio latents (length, channels × latent mel bins)."""
    config = audio_vae.config
    mel = log_mel(waveform, config.sample_rate, config.mel_hop_length, config.mel_bins)
    latents = audio_vae.encode(mel.to(audio_vae.device, audio_vae.dtype)).latent_dist.mode()
    pipeline = _pipeline_class()
    packed = pipeline._pack_audio_latents(latents)
    packed = pipeline._normalize_audio_latents(packed, audio_vae.latents_mean,
                                               audio_vae.latents_std)[0].float().cpu()
    if packed.shape[0] < length:  # the VAE's causal padding can leave it a step short
        packed = torch.cat([packed, packed[-1:].expand(length - packed.shape[0], -1)])
    return packed[:length]


@torch.no_grad()
def encode_texts(model_dir: Path, texts: list[str], device: torch.device,
                 max_sequence_length: int) -> dict[str, torch.Tensor]:
    """Gemma features per text, trimmed to its tokens (they are left-padded again, to
    the same length, in the training step)."""
    from ..model.loader import load_component

    tokenizer = load_component(model_dir, "tokenizer", device)
    text_encoder = load_component(model_dir, "text_encoder", device)
    pipe = _pipeline_class()(scheduler=None, vae=None, audio_vae=None, text_encoder=text_encoder,
                             tokenizer=tokenizer, connectors=None, transformer=None, vocoder=None)
    out = {}
    for text in texts:
        embeds, mask = pipe._get_gemma_prompt_embeds(
            text, max_sequence_length=max_sequence_length, device=device,
            dtype=text_encoder.dtype)
        out[text_key(text)] = embeds[0][mask[0].bool()].float().cpu()
    del pipe, text_encoder
    return out


def _manifest_hash(dataset_dir: Path) -> str:
    return hashlib.sha256((dataset_dir / "manifest.json").read_bytes()).hexdigest()


def load_index(cache_dir: Path, dataset_dir: Path) -> dict[str, Any] | None:
    """The cache's index if it is complete and was made from this dataset."""
    path = cache_dir / INDEX
    if not path.is_file():
        return None
    index = json.loads(path.read_text())
    return index if index.get("manifest") == _manifest_hash(dataset_dir) else None


def encode_dataset(dataset_dir: Path, cache_dir: Path, model_dir: Path, device: torch.device,
                   *, with_audio: bool, max_sequence_length: int,
                   negative_prompt: str = "") -> dict[str, Any]:
    """Encode every sample, caption, validation prompt and the negative prompt into
    `cache_dir`; returns the cache index."""
    if (index := load_index(cache_dir, dataset_dir)) is not None:
        log.info("latent cache found: %d samples, not encoding again", len(index["samples"]))
        return index
    from ..model.loader import load_component

    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    (cache_dir / "latents").mkdir(parents=True, exist_ok=True)
    (cache_dir / "text").mkdir(exist_ok=True)
    vae = load_component(model_dir, "vae", device)
    audio_vae = load_component(model_dir, "audio_vae", device) if with_audio else None
    samples = []
    for sample in manifest["samples"]:
        tensors = {"video": encode_video(vae, read_video(dataset_dir / sample["video"]))}
        if audio_vae is not None:
            waveform, _ = read_wav(dataset_dir / sample["audio"]["path"])
            length = audio_latent_frames(sample["frames"], sample["frameRate"])
            tensors["audio"] = encode_audio(audio_vae, torch.from_numpy(waveform), length)
        save_file(tensors, cache_dir / "latents" / f"{sample['id']}.safetensors")
        samples.append({"id": sample["id"], "caption": text_key(sample["caption"]),
                        "frames": sample["frames"], "frameRate": sample["frameRate"],
                        "suffix": sample["suffix"]})
        log.info("encoded %s", sample["id"])
    del vae, audio_vae
    captions = sorted({s["caption"] for s in manifest["samples"]}
                      | {v["prompt"] for v in manifest["validation"]} | {negative_prompt})
    for key, embeds in encode_texts(model_dir, captions, device, max_sequence_length).items():
        save_file({"embeds": embeds}, cache_dir / "text" / f"{key}.safetensors")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    index = {"manifest": _manifest_hash(dataset_dir), "withAudio": with_audio,
             "maxSequenceLength": max_sequence_length, "samples": samples,
             "negative": text_key(negative_prompt)}
    (cache_dir / INDEX).write_text(json.dumps(index, indent=1))  # written last: the marker
    return index


def load_text(cache_dir: Path, text: str) -> torch.Tensor:
    return load_file(cache_dir / "text" / f"{text_key(text)}.safetensors")["embeds"]


def load_sample(cache_dir: Path, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
    tensors = load_file(cache_dir / "latents" / f"{sample['id']}.safetensors")
    tensors["text"] = load_file(cache_dir / "text" / f"{sample['caption']}.safetensors")["embeds"]
    return tensors
