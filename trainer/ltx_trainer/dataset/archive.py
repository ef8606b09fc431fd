"""Safe extraction of the training archive.

Refuses path traversal, absolute paths and links; caps the entry count, the total
uncompressed size and the compression ratio (zip bombs); ignores `__MACOSX/` and
dotfiles. Only videos and captions are written out: images are reported by name, and
so are archives inside the archive, which are never unpacked (each level would need
its own bomb and traversal guards, and a user who zipped a folder of zips meant the
videos inside: the message says to put them in the top-level archive).
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ltx_contract.outcomes import InvalidInput

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic",
                  ".heif", ".avif"}
CAPTION_SUFFIX = ".txt"
ARCHIVE_SUFFIXES = {".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar"}


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 20_000
    max_total_bytes: int = 100 * 2**30
    max_ratio: float = 200.0  # uncompressed / compressed, for entries over 1 MiB


@dataclass
class ArchiveContents:
    videos: list[PurePosixPath] = field(default_factory=list)
    captions: dict[PurePosixPath, PurePosixPath] = field(default_factory=dict)  # by video
    images: list[PurePosixPath] = field(default_factory=list)
    archives: list[PurePosixPath] = field(default_factory=list)  # nested: not unpacked
    ignored: list[str] = field(default_factory=list)
    entries: dict[PurePosixPath, zipfile.ZipInfo] = field(default_factory=dict)


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _entry_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise InvalidInput(f"the archive entry {info.filename!r} points outside the archive "
                           "(absolute path or '..'); such archives are refused")
    return path


def scan(archive: zipfile.ZipFile, limits: ArchiveLimits) -> ArchiveContents:
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise InvalidInput(f"the archive has {len(infos)} entries, over the limit of "
                           f"{limits.max_entries}")
    contents = ArchiveContents()
    total = 0
    files = contents.entries
    for info in infos:
        path = _entry_path(info)
        if _is_link(info):
            raise InvalidInput(f"the archive entry {info.filename!r} is a link; links are "
                               "refused")
        if info.is_dir():
            continue
        if path.parts[0] == "__MACOSX" or any(p.startswith(".") for p in path.parts):
            contents.ignored.append(info.filename)
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            raise InvalidInput(f"the archive unpacks to more than {limits.max_total_bytes} "
                               "bytes")
        if info.file_size > 2**20 and info.file_size > limits.max_ratio * max(
                info.compress_size, 1):
            raise InvalidInput(f"the archive entry {info.filename!r} compresses more than "
                               f"{limits.max_ratio:.0f}:1, which looks like a zip bomb")
        files[path] = info
    by_stem = {(p.parent, p.stem): p for p in files if p.suffix.lower() == CAPTION_SUFFIX}
    for path in sorted(files):
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            contents.videos.append(path)
            if caption := by_stem.get((path.parent, path.stem)):
                contents.captions[path] = caption
        elif suffix in IMAGE_SUFFIXES:
            contents.images.append(path)
        elif suffix in ARCHIVE_SUFFIXES:
            contents.archives.append(path)
    return contents


def shown(paths: list[PurePosixPath], limit: int = 5) -> str:
    """Archive paths for a message: the first `limit`, then how many more."""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(p.as_posix() for p in paths[:limit]) + more


def nested_archives_message(contents: ArchiveContents) -> str:
    return (f"the archive holds other archives ({shown(contents.archives)}): nested archives "
            "are not unpacked; put their videos in the top-level archive")


def extract(archive: zipfile.ZipFile, contents: ArchiveContents,
            members: list[PurePosixPath], dest: Path) -> None:
    """Write `members` under `dest`, stopping any entry that outgrows its declared size."""
    root = dest.resolve()
    for member in members:
        info = contents.entries[member]
        target = (root / member).resolve()
        if root not in target.parents:
            raise InvalidInput(f"the archive entry {info.filename!r} points outside the archive")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, target.open("wb") as out:
            copied = 0
            while chunk := source.read(1 << 20):
                copied += len(chunk)
                if copied > info.file_size:
                    raise InvalidInput(f"the archive entry {info.filename!r} is larger than it "
                                       "declares")
                out.write(chunk)


def open_archive(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise InvalidInput("the training data is not a valid .zip archive") from None


def unpack(path: Path, dest: Path, limits: ArchiveLimits) -> ArchiveContents:
    """Scan the archive, refuse images, and extract the videos and their captions."""
    with open_archive(path) as archive:
        contents = scan(archive, limits)
        if contents.images:
            raise InvalidInput(f"the archive contains images ({shown(contents.images)}): there "
                               "is nothing to extend over time on a still; use videos only")
        try:
            extract(archive, contents, [*contents.videos, *contents.captions.values()], dest)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise InvalidInput(f"the archive is damaged: {exc}") from None
    return contents

