"""Dataset preprocessing: the prepared dataset encoded once, into an on-disk cache.

Video goes through the video VAE and is normalized; audio goes waveform → log-mel →
audio VAE → packed and normalized; captions, validation prompts and the negative prompt
go through Gemma once each (the connectors run in the training step). The text encoder
and the VAEs are released before training starts, and a resumed run finds the cache
and does not encode again.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ltx_contract.manifest import Manifest

from ..codec.latents import encode_audio, encode_video
from ..codec.text import encode_texts, load_text_by_key, save_texts, text_key
from ..codec.video import read_video
from ..dataset.media import read_wav

log = logging.getLogger(__name__)
INDEX = "index.json"


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

    manifest = Manifest.read(dataset_dir)
    (cache_dir / "latents").mkdir(parents=True, exist_ok=True)
    vae = load_component(model_dir, "vae", device)
    audio_vae = load_component(model_dir, "audio_vae", device) if with_audio else None
    samples = []
    for sample in manifest.samples:
        tensors = {"video": encode_video(vae, read_video(dataset_dir / sample.video)).cpu()}
        if audio_vae is not None:
            waveform, _ = read_wav(dataset_dir / sample.audio.path)
            length = manifest.suffix_window(sample).audio_latent_frames
            tensors["audio"] = encode_audio(audio_vae, torch.from_numpy(waveform), length).cpu()
        save_file(tensors, cache_dir / "latents" / f"{sample.id}.safetensors")
        samples.append({"id": sample.id, "caption": text_key(sample.caption),
                        "frames": sample.frames, "frameRate": sample.frame_rate,
                        "suffix": sample.suffix.to_dict()})
        log.info("encoded %s", sample.id)
    del vae, audio_vae
    captions = sorted({s.caption for s in manifest.samples}
                      | {v.prompt for v in manifest.validation} | {negative_prompt})
    save_texts(cache_dir, encode_texts(model_dir, captions, device, max_sequence_length))
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    index = {"manifest": _manifest_hash(dataset_dir), "withAudio": with_audio,
             "maxSequenceLength": max_sequence_length, "samples": samples,
             "negative": text_key(negative_prompt)}
    (cache_dir / INDEX).write_text(json.dumps(index, indent=1))  # written last: the marker
    return index


def load_sample(cache_dir: Path, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A cached sample's latents and its caption's Gemma features, on the CPU."""
    tensors = load_file(cache_dir / "latents" / f"{sample['id']}.safetensors")
    tensors["text"] = load_text_by_key(cache_dir, sample["caption"])
    return tensors
