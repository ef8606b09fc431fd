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


def part_location(part: str | None, model: str | Path | None) -> str | None:
    """Where `spec.model.textEncoder` (or `videoVae`, `audioVae`) points: a URL as it is; a
    relative path beside the checkpoint, in the same store or volume (`model`: where the
    checkpoint is)."""
    if part is None or part.startswith(STORE_SCHEMES) or model is None:
        return part
    model = str(model).rstrip("/")
    if model.startswith(STORE_SCHEMES):
        return f"{model.rpartition('/')[0]}/{part}"
    return str(Path(model).parent / part)


def resolve_model(source: Path | str | None, cache: Path | None = None,
                  text_encoder: Path | str | None = None, *,
                  video_vae: Path | str | None = None, audio_vae: Path | str | None = None,
                  version: str | None = None) -> Model:
    """The model to use, checked: a diffusers folder; a single-file checkpoint (`.safetensors`)
    with its Gemma-3 folder `text_encoder`; an LTX-2.5 transformer file whose text encoder,
    video VAE and audio VAE files lie beside it or are named (`text_encoder`, `video_vae`,
    `audio_vae`); any of them as a local path or a store URL (downloaded into `cache`); or,
    with None, the tiny model (written into `cache`). `version` ("ltx-2.5"), where given,
    must be what the files are. Jobs never pass None: they refuse a training without a
    model before they get here."""
    from .loader import FolderModel

    cache = cache or default_model_cache()
    if source is None:
        if text_encoder is not None or video_vae is not None or audio_vae is not None:
            raise InvalidInput("a text encoder or VAE was given without a model: it goes with "
                               "a checkpoint")
        return FolderModel(tiny_model(cache))
    model = _resolve(source, cache, text_encoder, video_vae, audio_vae, version)
    try:
        profile = model.profile
    except (ValueError, FileNotFoundError) as exc:
        raise InvalidInput(f"{source}: {exc}") from None
    if version is not None and version != profile.name:
        raise InvalidInput(f"spec.model.version is {version}, but the model at {source} is "
                           f"{profile.name} (read from its files)")
    return model


def _resolve(source: Path | str, cache: Path, text_encoder: Path | str | None,
             video_vae: Path | str | None, audio_vae: Path | str | None,
             version: str | None) -> Model:
    from .loader import FolderModel
    from .single_file import CheckpointError, describe_single_file
    from .split_pack import describe_split_pack, is_split_transformer

    url = isinstance(source, str) and source.startswith(STORE_SCHEMES)
    if not is_checkpoint(source):
        folder = download_model(str(source), cache) if url else Path(source)
        if not is_model_folder(folder):
            raise InvalidInput(f"{folder} is not a diffusers model folder (no {MODEL_INDEX}) "
                               f"and not a checkpoint ({CHECKPOINT_SUFFIX})")
        if text_encoder is not None or video_vae is not None or audio_vae is not None:
            raise InvalidInput(
                f"{source} is a diffusers model folder, which has its own text_encoder/ and "
                "VAEs: a separate text encoder or VAE goes with a checkpoint only")
        return FolderModel(folder)
    no_text_encoder = CheckpointError(f"{source} holds no text encoder: give its Gemma-3 folder "
                                      "(config.json, the weights and the tokenizer) as well")
    if url and text_encoder is None and version == "ltx-2.3":  # before tens of GB download
        raise no_text_encoder
    checkpoint = download_checkpoint(str(source), cache) if url else Path(source)
    if checkpoint.is_file() and is_split_transformer(checkpoint):
        named = {"text_encoder": _part_file(text_encoder, cache),
                 "video_vae": _part_file(video_vae, cache),
                 "audio_vae": _part_file(audio_vae, cache)}
        if url:  # the published names beside it in the store, where not named
            named.update({k: v for k, v in _fetch_published(str(source), cache).items()
                          if named[k] is None})
        return describe_split_pack(checkpoint, **named)
    if video_vae is not None or audio_vae is not None:
        raise CheckpointError(f"{source} is a single file that holds its own VAEs: a separate "
                              "video or audio VAE goes with an LTX-2.5 transformer file")
    if text_encoder is None:
        raise no_text_encoder
    return describe_single_file(checkpoint, _text_encoder_dir(text_encoder, cache))


def _part_file(part: Path | str | None, cache: Path) -> Path | None:
    """A split pack's part file, where it lies or downloaded."""
    if part is None:
        return None
    text = str(part)
    return download_checkpoint(text, cache) if text.startswith(STORE_SCHEMES) else Path(part)


def _fetch_published(url: str, cache: Path) -> dict[str, Path | None]:
    """The pack's parts under their published names beside the transformer at `url` (in its
    store folder, or the published layout's sibling folders), downloaded; None where absent."""
    from .split_pack import AUDIO_VAE_FILE, PUBLISHED_FOLDERS, TEXT_ENCODER_FILE, VIDEO_VAE_FILES

    folder = url.rstrip("/").rpartition("/")[0]
    names = {"text_encoder": [TEXT_ENCODER_FILE], "video_vae": list(VIDEO_VAE_FILES.values()),
             "audio_vae": [AUDIO_VAE_FILE]}
    found: dict[str, Path | None] = dict.fromkeys(names)
    for part, candidates in names.items():
        places = (folder, f"{folder.rpartition('/')[0]}/{PUBLISHED_FOLDERS[part]}")
        for name in candidates:
            for place in places:
                try:
                    path = download_checkpoint(f"{place}/{name}", cache)
                except InvalidInput:  # not in the store
                    continue
                if path.is_file():  # a file:// one is where it lies, or nowhere
                    found[part] = path
                    break
            if found[part] is not None:
                break
    return found


def _text_encoder_dir(text_encoder: Path | str, cache: Path) -> Path:
    from ..store import file_url_path

    text = str(text_encoder)
    if text.startswith("file://"):
        return file_url_path(text)
    if text.startswith("s3://"):
        return _download_folder(text, cache, "config.json", "a Gemma-3 folder")
    return Path(text_encoder)
