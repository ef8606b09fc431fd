"""Dataset preprocessing: the prepared dataset encoded once, into an on-disk cache.

Video goes through the video VAE and is normalized; audio goes waveform → log-mel →
audio VAE → packed and normalized; captions, validation prompts and the negative prompt
go through Gemma once each (the connectors run in the training step). The text encoder
and the VAEs are released before training starts, and a resumed run finds the cache
and does not encode again. With several ranks, each encodes its share.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save

from ltx_contract.manifest import Manifest
from ltx_contract.outcomes import InvalidInput, Outcome

from ..codec.latents import encode_audio, encode_video
from ..codec.text import encode_texts, load_text_by_key, save_texts, text_key
from ..codec.video import read_video
from ..dataset.media import read_wav
from . import distributed
from .distributed import SINGLE, World

if TYPE_CHECKING:
    from ..model.loader import Model, ModelLike

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


def encode_dataset(dataset_dir: Path, cache_dir: Path, model: ModelLike, device: torch.device,
                   *, with_audio: bool, max_sequence_length: int,
                   negative_prompt: str = "", world: World = SINGLE) -> dict[str, Any]:
    """Encode every sample, caption, validation prompt and the negative prompt into
    `cache_dir`; returns the cache index. With several ranks each encodes its share (every
    rank-th sample and text), the shares are gathered, and each node's first rank writes
    the whole cache into its own `cache_dir` (no disk is shared between nodes). A sample
    one rank cannot encode fails every rank at once, with its message."""
    from ..model.loader import as_model

    index = load_index(cache_dir, dataset_dir)
    if not distributed.any_rank(world, index is None):
        log.info("latent cache found: %d samples, not encoding again", len(index["samples"]))
        return index
    manifest = Manifest.read(dataset_dir)
    captions = sorted({s.caption for s in manifest.samples}
                      | {v.prompt for v in manifest.validation} | {negative_prompt})
    try:
        share = _encode_share(manifest, dataset_dir, as_model(model), device, with_audio,
                              max_sequence_length, world, captions)
        failure = None
    except Outcome as exc:
        share, failure = None, distributed.failure_of(exc, world)
    shares = distributed.gather_objects(world, (failure, share))
    distributed.raise_failure([f for f, _ in shares])
    if world.is_local_main:
        _write_cache(cache_dir, dataset_dir, manifest, with_audio, max_sequence_length,
                     negative_prompt, [s for _, s in shares])
    distributed.barrier(world)
    return load_index(cache_dir, dataset_dir)


def _encode_share(manifest: Manifest, dataset_dir: Path, model: Model, device: torch.device,
                  with_audio: bool, max_sequence_length: int, world: World,
                  captions: list[str]) -> dict[str, Any]:
    """This rank's samples (as safetensors bytes) and texts (Gemma features)."""
    latents: dict[str, bytes] = {}
    mine = manifest.samples[world.rank::world.size]
    if mine:
        vae = model.load("vae", device)
        audio_vae = model.load("audio_vae", device) if with_audio else None
        for sample in mine:
            tensors = {"video": encode_video(vae, _read_prepared(dataset_dir, sample)).cpu()}
            if audio_vae is not None:
                waveform, _ = read_wav(dataset_dir / sample.audio.path)
                length = manifest.suffix_window(sample).audio_latent_frames
                tensors["audio"] = encode_audio(audio_vae, torch.from_numpy(waveform),
                                                length).cpu()
            latents[sample.id] = save(tensors)
            log.info("encoded %s", sample.id)
        del vae, audio_vae
    texts = captions[world.rank::world.size]
    features = encode_texts(model, texts, device, max_sequence_length) if texts else {}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"latents": latents, "texts": features}


def _read_prepared(dataset_dir: Path, sample: Any) -> torch.Tensor:
    import av

    try:
        return read_video(dataset_dir / sample.video)
    except (av.error.FFmpegError, ValueError) as exc:  # ValueError: no frames at all
        raise InvalidInput(f"the prepared sample {sample.id} ({sample.video}) cannot be "
                           f"decoded ({exc}): prepare the dataset again") from exc


def _write_cache(cache_dir: Path, dataset_dir: Path, manifest: Manifest, with_audio: bool,
                 max_sequence_length: int, negative_prompt: str,
                 shares: list[dict[str, Any]]) -> None:
    (cache_dir / "latents").mkdir(parents=True, exist_ok=True)
    latents = {k: v for share in shares for k, v in share["latents"].items()}
    for sample_id, data in latents.items():
        (cache_dir / "latents" / f"{sample_id}.safetensors").write_bytes(data)
    save_texts(cache_dir, {k: v for share in shares for k, v in share["texts"].items()})
    samples = [{"id": sample.id, "caption": text_key(sample.caption), "frames": sample.frames,
                "frameRate": sample.frame_rate, "suffix": sample.suffix.to_dict(),
                "heldOut": sample.held_out}
               for sample in manifest.samples]
    index = {"manifest": _manifest_hash(dataset_dir), "withAudio": with_audio,
             "maxSequenceLength": max_sequence_length, "samples": samples,
             "negative": text_key(negative_prompt)}
    (cache_dir / INDEX).write_text(json.dumps(index, indent=1))  # written last: the marker


def load_sample(cache_dir: Path, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A cached sample's latents and its caption's Gemma features, on the CPU."""
    tensors = load_file(cache_dir / "latents" / f"{sample['id']}.safetensors")
    tensors["text"] = load_text_by_key(cache_dir, sample["caption"])
    return tensors
