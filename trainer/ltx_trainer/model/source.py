"""Where the base model comes from: a local folder, a store URL (downloaded once into the
model cache), or, for local runs only, the tiny random model (written there on first use).

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

from ltx_contract.outcomes import InvalidInput

log = logging.getLogger(__name__)

MODEL_CACHE_ENV = "LTX_EXTEND_MODEL_CACHE"
MODEL_INDEX = "model_index.json"
TINY_MODEL = "tiny-model"


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
    from ..store import open_store

    dest = cache / cache_name(url)
    if is_model_folder(dest):
        log.info("model %s found in the model cache (%s)", url, dest)
        return dest
    with _locked(cache, dest.name):
        if is_model_folder(dest):  # another pod finished it while this one waited
            return dest
        store = open_store(url)
        partial = cache / f".{dest.name}.partial"
        keys = store.keys("")
        if MODEL_INDEX not in keys:
            raise InvalidInput(f"the model at {url} is not a diffusers model folder (it has "
                               f"no {MODEL_INDEX})")
        fetched = 0
        for key in keys:
            if not (partial / key).is_file():  # files are written whole or not at all
                store.get_file(key, partial / key)
                fetched += 1
        partial.rename(dest)
    log.info("model %s downloaded to %s (%d of %d files)", url, dest, fetched, len(keys))
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


def resolve_model_dir(model_dir: Path | str | None, cache: Path | None = None) -> Path:
    """The model folder to use: a local folder, a store URL (downloaded into `cache`), or,
    with None, the tiny model (written into `cache`). Jobs never pass None: they refuse
    a training without a model before they get here."""
    cache = cache or default_model_cache()
    if isinstance(model_dir, str) and model_dir.startswith(("s3://", "file://")):
        return download_model(model_dir, cache)
    if model_dir is not None:
        model_dir = Path(model_dir)
        if not is_model_folder(model_dir):
            raise InvalidInput(f"{model_dir} is not a diffusers model folder (no {MODEL_INDEX})")
        return model_dir
    return tiny_model(cache)
