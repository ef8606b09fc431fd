"""Where the base model comes from: a local folder, a store URL (downloaded once into
a cache), or the tiny random model (written on first use, local runs only)."""

from __future__ import annotations

import os
from pathlib import Path


def default_tiny_model_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ltx-extend" / "tiny-model"


def download_model(url: str, dest: Path) -> Path:
    """Copy a model folder from the artifact store (s3:// or file:// prefix) to `dest`,
    once: a folder already holding its model_index.json is used as it is."""
    from ..store import open_store

    if (dest / "model_index.json").is_file():
        return dest
    store = open_store(url)
    partial = dest.with_name(dest.name + ".partial")
    keys = store.keys("")
    for key in keys:
        store.get_file(key, partial / key)
    if not (partial / "model_index.json").is_file():
        raise FileNotFoundError(f"{url} holds no diffusers model folder (no model_index.json)")
    partial.rename(dest)
    return dest


def resolve_model_dir(model_dir: Path | str | None) -> Path:
    """The model folder to use: a local folder, a store URL (downloaded to the cache), or
    the tiny model (written on first use)."""
    if isinstance(model_dir, str) and model_dir.startswith(("s3://", "file://")):
        import hashlib

        key = hashlib.sha1(model_dir.encode()).hexdigest()[:16]
        return download_model(model_dir, default_tiny_model_dir().parent / "models" / key)
    if model_dir is not None:
        model_dir = Path(model_dir)
        if not (model_dir / "model_index.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a diffusers model folder "
                                    "(no model_index.json)")
        return model_dir
    tiny = default_tiny_model_dir()
    if not (tiny / "model_index.json").is_file():
        from .tiny import write_tiny_model

        write_tiny_model(tiny)
    return tiny
