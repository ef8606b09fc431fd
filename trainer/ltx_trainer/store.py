"""The artifact store: local folders (a plain path or a `file://` URL) and S3-compatible
object storage (minio client).

Per resource: `<prefix>/<namespace>/<name>/<uid>/{dataset,cache,checkpoints,outputs}`
plus the stage results; the uid keeps a re-created resource of the same name from ever
touching an earlier one's files. Uploads retry with backoff; large files go up in
parts (the minio client's multipart upload). Download URLs are presigned HTTPS with a
configurable lifetime, or under a configurable public base URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)
T = TypeVar("T")
PART_SIZE = 64 * 2**20

_SEGMENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


def check_run(run: str) -> str:
    """`run` if it is `<namespace>/<name>/<uid>`: three plain path segments (letters,
    digits, '.', '-', '_'; never '.' or '..'), else ValueError saying so."""
    parts = run.split("/")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        raise ValueError(f"the run must be <namespace>/<name>/<uid>, three plain path "
                         f"segments of letters, digits, '.', '-' or '_', not {run!r}")
    return run


def _retry(what: str, action: Callable[[], T], attempts: int = 4, backoff: float = 1.0) -> T:
    import urllib3
    from minio.error import S3Error

    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (urllib3.exceptions.HTTPError, OSError, S3Error) as exc:
            if isinstance(exc, S3Error) and exc.code in ("NoSuchKey", "NoSuchBucket",
                                                         "AccessDenied"):
                raise
            if attempt == attempts:
                raise
            log.warning("%s failed (%s), retrying %d/%d", what, type(exc).__name__, attempt,
                        attempts)
            time.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


class Store(ABC):
    """Keys are '/'-separated paths under the store's root."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> str:
        """Upload `local` as `key`, whole or not at all; returns the key's URL."""

    @abstractmethod
    def get_file(self, key: str, local: Path) -> bool:
        """Download `key` to `local`; False when there is no such key."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix`, sorted."""

    @abstractmethod
    def url(self, key: str) -> str:
        """The key's store URL (file:// or s3://)."""

    def download_url(self, key: str) -> str:
        return self.url(key)

    # shared helpers
    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> str:
        """Upload `data` as `key`, whole or not at all; returns the key's URL."""

    def put_json(self, key: str, value: Any) -> str:
        # from memory: a result must still reach the store when the work disk is full
        return self.put_bytes(json.dumps(value, indent=2).encode(), key)

    def get_json(self, key: str) -> Any | None:
        """The JSON document at `key`, or None when there is none (or it is not JSON)."""
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "document.json"
            if not self.get_file(key, local):
                return None
            try:
                return json.loads(local.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                return None

    def put_tree(self, local: Path, prefix: str) -> None:
        for path in sorted(local.rglob("*")):
            if path.is_file():
                self.put_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")

    def get_tree(self, prefix: str, local: Path) -> int:
        keys = self.keys(prefix + "/")
        for key in keys:
            self.get_file(key, local / key[len(prefix) + 1:])
        return len(keys)


class FileStore(Store):
    """A local folder. URLs are given in the form the folder was: `file://` URLs for a
    `file://` store, paths (relative ones kept relative) for a plain path."""

    def __init__(self, root: Path, plain: bool = False):
        self.root, self.plain = root, plain

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"key {key!r} leaves the store")
        return path

    def put_file(self, local: Path, key: str) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        shutil.copyfile(local, partial)
        partial.replace(dest)
        return self.url(key)

    def put_bytes(self, data: bytes, key: str) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        partial.write_bytes(data)
        partial.replace(dest)
        return self.url(key)

    def get_file(self, key: str, local: Path) -> bool:
        source = self._path(key)
        if not source.is_file():
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".part")
        shutil.copyfile(source, partial)
        partial.replace(local)  # whole or not at all, as the S3 client does
        return True

    def keys(self, prefix: str) -> list[str]:
        base = self.root.resolve()
        found = []
        start = self._path(prefix.rstrip("/")) if prefix.strip("/") else base
        if start.is_dir():
            found = [p.relative_to(base).as_posix() for p in start.rglob("*")
                     if p.is_file() and not p.name.endswith(".part")]
        return sorted(k for k in found if k.startswith(prefix))

    def url(self, key: str) -> str:
        if self.plain:
            return os.path.normpath(os.path.join(self.root, key))
        return self._path(key).as_uri()


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, client: Any,
                 presign_seconds: int = 7 * 24 * 3600, public_base_url: str | None = None):
        self.bucket, self.prefix, self.client = bucket, prefix.strip("/"), client
        self.presign_seconds, self.public_base_url = presign_seconds, public_base_url

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, local: Path, key: str) -> str:
        _retry(f"upload of {key}", lambda: self.client.fput_object(
            self.bucket, self._key(key), str(local), part_size=PART_SIZE))
        return self.url(key)

    def put_bytes(self, data: bytes, key: str) -> str:
        import io

        _retry(f"upload of {key}", lambda: self.client.put_object(
            self.bucket, self._key(key), io.BytesIO(data), len(data)))
        return self.url(key)

    def get_file(self, key: str, local: Path) -> bool:
        from minio.error import S3Error

        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            _retry(f"download of {key}", lambda: self.client.fget_object(
                self.bucket, self._key(key), str(local)))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return False
            raise
        return True

    def keys(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        objects = _retry(f"listing of {prefix}", lambda: list(
            self.client.list_objects(self.bucket, prefix=full, recursive=True)))
        return sorted(o.object_name[strip:] for o in objects)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def download_url(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{self._key(key)}"
        return self.client.presigned_get_object(
            self.bucket, self._key(key), expires=timedelta(seconds=self.presign_seconds))


def file_url_path(url: str) -> Path:
    """The path of a `file:///path` URL; ValueError for a relative or remote one."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path:
        raise ValueError(f"{url!r} is not a file:///absolute/path URL (write a plain path "
                         "for a relative folder)")
    return Path(unquote(parts.path))


def open_store(url: str, env: dict[str, str] | None = None) -> Store:
    """A store for a folder (a plain path or `file:///path`) or `s3://bucket/prefix`
    (settings from the environment: see `ltx_trainer.s3`; `LTX_EXTEND_PRESIGN_SECONDS`,
    `LTX_EXTEND_PUBLIC_BASE_URL`)."""
    env = dict(os.environ) if env is None else env
    if not url:
        raise ValueError("the artifact store is empty: give a folder, a file:// or an "
                         "s3://bucket URL")
    parts = urlsplit(url)
    if "://" not in url:
        return FileStore(Path(url), plain=True)
    if parts.scheme == "file":
        return FileStore(file_url_path(url))
    if parts.scheme == "s3" and parts.netloc:
        from .s3 import client_from_env

        return S3Store(parts.netloc, parts.path, client_from_env(env),
                       presign_seconds=int(env.get("LTX_EXTEND_PRESIGN_SECONDS", 7 * 24 * 3600)),
                       public_base_url=env.get("LTX_EXTEND_PUBLIC_BASE_URL") or None)
    raise ValueError("the artifact store must be a folder, a file:// or an s3://bucket URL, "
                     f"not {url!r}")
