"""Where the base model comes from: a diffusers model folder, the official LTX-2.3
single-file checkpoint with its Gemma-3 folder, or LTX-2.5's split pack (a transformer file
with its text encoder, video VAE and audio VAE files beside it or named), each local or at a
store URL (downloaded once into the model cache), or, for local runs only, the tiny random
model (written there on first use).

`resolve_model` turns what a user names into a `loader.Model`, checked: a folder up to its
configs, a single file up to its header and its Gemma folder up to its config, a split
pack up to each file's header, and whatever cannot give an LTX-2 model, or not the version
asked for, is refused (`InvalidInput`, naming the file) before any weight is read or
anything encoded. A `file://` checkpoint is used where it lies (it is tens of GB); an
`s3://` one is downloaded into the cache like a folder.

The model cache is the stage's `--model-cache` (`LTX_EXTEND_MODEL_CACHE`; by default
`<work>/model-cache`): a volume the platform mounts there keeps a downloaded model for
the next pod. A download goes to a hidden partial folder, file by file, and becomes the
model folder by one rename when it is complete; a pod that dies mid-way leaves the
finished files for the next one, and pods sharing the cache take turns under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ltx_contract.outcomes import InvalidInput
from ltx_contract.rules import CHECKPOINT_SUFFIX

if TYPE_CHECKING:
    from .loader import Model

log = logging.getLogger(__name__)

MODEL_CACHE_ENV = "LTX_EXTEND_MODEL_CACHE"
MODEL_INDEX = "model_index.json"
TINY_MODEL = "tiny-model"
STORE_SCHEMES = ("s3://", "file://")


def default_model_cache() -> Path:
    """The cache of commands without a work folder (`extend`, benchmarks)."""
    if os.environ.get(MODEL_CACHE_ENV):
        return Path(os.environ[MODEL_CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ltx-extend" / "models"


def is_model_folder(path: Path) -> bool:
    return (path / MODEL_INDEX).is_file()


@contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    """One process at a time fills `name` in `cache` (pods may share the volume)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f".{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cache_name(url: str) -> str:
    """`s3://models/ltx-2.3/` → `ltx-2.3-<hash of the URL>`: readable and unique."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1]).strip(".-")
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{tail[:64] or 'model'}-{digest}"


def download_model(url: str, cache: Path) -> Path:
    """The model folder at `url` (an s3:// or file:// store prefix), downloaded into
    `cache` unless it is there already."""
    return _download_folder(url, cache, MODEL_INDEX, "a diffusers model folder")


def _download_folder(url: str, cache: Path, marker: str, what: str) -> Path:
    """The folder at store prefix `url`, downloaded into `cache` once (`marker` is the
    file that makes it what it is: refused without it)."""
    from ..store import open_store

    dest = cache / cache_name(url)
    if (dest / marker).is_file():
        log.info("%s found in the model cache (%s)", url, dest)
        return dest
    with _locked(cache, dest.name):
        if (dest / marker).is_file():  # another pod finished it while this one waited
            return dest
        store = open_store(url)
        partial = cache / f".{dest.name}.partial"
        keys = store.keys("")
        if marker not in keys:
            raise InvalidInput(f"the model at {url} is not {what} (it has no {marker})")
        fetched = 0
        for key in keys:
            if not (partial / key).is_file():  # files are written whole or not at all
                store.get_file(key, partial / key)
                fetched += 1
        partial.rename(dest)
    log.info("%s downloaded to %s (%d of %d files)", url, dest, fetched, len(keys))
    return dest


def download_checkpoint(url: str, cache: Path) -> Path:
    """The single-file checkpoint at `url`: a file:// one where it lies, an s3:// one
    downloaded into `cache` once (whole or not at all)."""
    from ..store import file_url_path, open_store

    if url.startswith("file://"):
        return file_url_path(url)
    folder, _, name = url.rstrip("/").rpartition("/")
    dest = cache / cache_name(url) / name
    with _locked(cache, dest.parent.name):
        if not dest.is_file():
            if not open_store(folder).get_file(name, dest):
                raise InvalidInput(f"the model at {url} does not exist")
            log.info("%s downloaded to %s", url, dest)
    return dest


def tiny_model(cache: Path) -> Path:
    """The tiny random model in `cache`, written on first use (local runs only), and
    written again when an older maker wrote the one there."""
    from .tiny import is_current_tiny_model, write_tiny_model

    dest = cache / TINY_MODEL
    if is_current_tiny_model(dest):
        return dest
    with _locked(cache, TINY_MODEL):
        if not is_current_tiny_model(dest):
            partial = cache / f".{TINY_MODEL}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            write_tiny_model(partial)
            shutil.rmtree(dest, ignore_errors=True)
            partial.rename(dest)
    return dest


def is_checkpoint(location: str | Path) -> bool:
    """Whether a model location names a single-file checkpoint (rather than a folder)."""
    return str(location).rstrip("/").endswith(CHECKPOINT_SUFFIX)


def text_encoder_location(text_encoder: str | None, model: str | Path | None) -> str | None:
    """Where `spec.model.textEncoder` points: a URL as it is; a relative path beside the
    checkpoint, in the same store or volume (`model`: where the checkpoint is)."""
    if text_encoder is None or text_encoder.startswith(STORE_SCHEMES) or model is None:
        return text_encoder
    model = str(model).rstrip("/")
    if model.startswith(STORE_SCHEMES):
        return f"{model.rpartition('/')[0]}/{text_encoder}"
    return str(Path(model).parent / text_encoder)


def resolve_model(source: Path | str | None, cache: Path | None = None,
                  text_encoder: Path | str | None = None) -> Model:
    """The model to use, checked: a diffusers folder; a single-file checkpoint (`.safetensors`)
    with its Gemma-3 folder `text_encoder`; either as a local path or a store URL
    (downloaded into `cache`); or, with None, the tiny model (written into `cache`). Jobs
    never pass None: they refuse a training without a model before they get here."""
    from .single_file import CheckpointError, describe_single_file

    cache = cache or default_model_cache()
    if source is None:
        if text_encoder is not None:
            raise InvalidInput("a text encoder folder was given without a model: it goes with "
                               "a single-file checkpoint")
        return tiny_model(cache)
    url = isinstance(source, str) and source.startswith(STORE_SCHEMES)
    if not is_checkpoint(source):
        folder = download_model(str(source), cache) if url else Path(source)
        if not is_model_folder(folder):
            raise InvalidInput(f"{folder} is not a diffusers model folder (no {MODEL_INDEX}) "
                               f"and not a single-file checkpoint ({CHECKPOINT_SUFFIX})")
        if text_encoder is not None:
            raise InvalidInput(
                f"{source} is a diffusers model folder, which has its own text_encoder/: a "
                "separate text encoder folder goes with a single-file checkpoint only")
        return folder
    if text_encoder is None:  # refused before a checkpoint of tens of GB is downloaded
        raise CheckpointError(f"{source} holds no text encoder: give its Gemma-3 folder "
                              "(config.json, the weights and the tokenizer) as well")
    checkpoint = download_checkpoint(str(source), cache) if url else Path(source)
    return describe_single_file(checkpoint, _text_encoder_dir(text_encoder, cache))


def _text_encoder_dir(text_encoder: Path | str, cache: Path) -> Path:
    from ..store import file_url_path

    text = str(text_encoder)
    if text.startswith("file://"):
        return file_url_path(text)
    if text.startswith("s3://"):
        return _download_folder(text, cache, "config.json", "a Gemma-3 folder")
    return Path(text_encoder)
