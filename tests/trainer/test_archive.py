"""Safe extraction: traversal, links, bombs, images, macOS metadata, nested names and
nested archives."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from ltx_contract.outcomes import InvalidInput
from ltx_trainer.dataset.archive import ArchiveLimits, unpack


def make_zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None,
             compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_videos_captions_and_nested_same_names(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {
        "clip.mp4": b"v1", "clip.txt": b"top caption",
        "day2/clip.MP4": b"v2", "day2/clip.txt": b"nested caption",
        "day3/clip.mov": b"v3", "other.txt": b"stray caption",
        "__MACOSX/day2/._clip.MP4": b"junk", ".DS_Store": b"junk", "day3/.hidden.mkv": b"x",
        "notes.pdf": b"ignored",
    })
    out = tmp_path / "out"
    contents = unpack(archive, out, ArchiveLimits())
    assert contents.videos == [PurePosixPath("clip.mp4"), PurePosixPath("day2/clip.MP4"),
                               PurePosixPath("day3/clip.mov")]
    assert contents.captions == {PurePosixPath("clip.mp4"): PurePosixPath("clip.txt"),
                                 PurePosixPath("day2/clip.MP4"): PurePosixPath("day2/clip.txt")}
    assert sorted(contents.ignored) == [".DS_Store", "__MACOSX/day2/._clip.MP4",
                                        "day3/.hidden.mkv"]
    assert files_under(out) == {"clip.mp4", "clip.txt", "day2/clip.MP4", "day2/clip.txt",
                                "day3/clip.mov"}
    assert (out / "day2/clip.MP4").read_bytes() == b"v2"


@pytest.mark.parametrize("name", ["../evil.mp4", "a/../../evil.mp4", "/abs/evil.mp4",
                                  "C:/evil.mp4", "..\\evil.mp4"])
def test_traversal_and_absolute_entries_are_refused(tmp_path, name):
    archive = make_zip(tmp_path / "a.zip", {"ok.mp4": b"v", name: b"evil"})
    work = tmp_path / "work"
    with pytest.raises(InvalidInput, match="points outside the archive"):
        unpack(archive, work / "out", ArchiveLimits())
    assert not (tmp_path / "evil.mp4").exists() and not work.exists()


def test_links_are_refused(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"ok.mp4": b"v"}, links={"link.mp4": "/etc/passwd"})
    with pytest.raises(InvalidInput, match=r"'link\.mp4' is a link"):
        unpack(archive, tmp_path / "out", ArchiveLimits())


def test_zip_bomb_ratio(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"bomb.mp4": b"\0" * (20 * 2**20)})
    with pytest.raises(InvalidInput, match="looks like a zip bomb"):
        unpack(archive, tmp_path / "out", ArchiveLimits())
    assert not (tmp_path / "out").exists()


def test_total_size_and_entry_caps(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {f"c{i}.mp4": b"x" * 100 for i in range(5)},
                       compression=zipfile.ZIP_STORED)
    with pytest.raises(InvalidInput, match="unpacks to more than 300 bytes"):
        unpack(archive, tmp_path / "o1", ArchiveLimits(max_total_bytes=300))
    with pytest.raises(InvalidInput, match="5 entries, over the limit of 4"):
        unpack(archive, tmp_path / "o2", ArchiveLimits(max_entries=4))


def test_images_are_refused_by_name(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"clip.mp4": b"v", "stills/a.JPG": b"i",
                                            "b.png": b"i"})
    with pytest.raises(InvalidInput) as info:
        unpack(archive, tmp_path / "out", ArchiveLimits())
    assert info.value.message == (
        "the archive contains images (b.png, stills/a.JPG): there is nothing to extend over "
        "time on a still; use videos only")


def test_not_a_zip(tmp_path):
    bogus = tmp_path / "a.zip"
    bogus.write_bytes(b"this is not a zip")
    with pytest.raises(InvalidInput, match=r"not a valid \.zip archive"):
        unpack(bogus, tmp_path / "out", ArchiveLimits())


def test_nested_archives_are_listed_and_not_extracted(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"clip.mp4": b"v", "more/day2.zip": b"PK",
                                            "old.tar.gz": b"x", "notes.txt": b"n"})
    contents = unpack(archive, tmp_path / "out", ArchiveLimits())
    assert contents.archives == [PurePosixPath("more/day2.zip"), PurePosixPath("old.tar.gz")]
    assert files_under(tmp_path / "out") == {"clip.mp4"}
