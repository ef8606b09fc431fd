"""Caption files: encodings, NULs, blanks and the length limit, read alone and through
the prepare stage."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ltx_contract.spec import MAX_TEXT_LENGTH, parse_spec
from ltx_trainer.dataset import FetchPolicy, PrepareSettings, prepare_dataset
from ltx_trainer.dataset.captions import READ_LIMIT_BYTES, read_caption

from harness.media_factory import make_clip

LEGACY = ("caption {name} is not valid UTF-8: it was read as Windows-1252 (cp1252); save "
          "captions as UTF-8 if any character looks wrong")
TOO_LONG = (f"caption {{name}} is longer than the {MAX_TEXT_LENGTH} characters allowed "
            f"(trigger phrase included): only the first {MAX_TEXT_LENGTH} are used")


def caption_of(tmp_path: Path, data: bytes, trigger: str | None = None):
    path = tmp_path / "c.txt"
    path.write_bytes(data)
    return read_caption(path, "clips/c.txt", trigger)


@pytest.mark.parametrize(("data", "text"), [
    ("café déjà vu".encode(), "café déjà vu"),
    (b"\xef\xbb\xbf" + "naïve  start\n".encode(), "naïve start"),  # UTF-8 byte-order mark
    ("mañana, “quoted”".encode("utf-16"), "mañana, “quoted”"),  # UTF-16 with its mark
])
def test_unicode_captions_are_read_as_written(tmp_path, data, text):
    assert caption_of(tmp_path, data).text == text
    assert caption_of(tmp_path, data).warnings == ()


@pytest.mark.parametrize(("data", "text"), [
    ("café déjà vu".encode("latin-1"), "café déjà vu"),
    ("“smart” quotes – and €".encode("cp1252"), "“smart” quotes – and €"),
    (b"undefined \x81 byte \xe9", "undefined \x81 byte é"),  # cp1252 leaves 0x81 out
])
def test_legacy_captions_are_decoded_with_a_warning(tmp_path, data, text):
    caption = caption_of(tmp_path, data)
    assert caption.text == text
    assert caption.warnings == (LEGACY.format(name="clips/c.txt"),)


def test_nuls_are_removed(tmp_path):
    caption = caption_of(tmp_path, b"a\0 dog\0\0 runs")
    assert caption.text == "a dog runs"
    assert caption.warnings == ("caption clips/c.txt holds NUL characters: they were removed",)


@pytest.mark.parametrize(("trigger", "text", "said"), [
    (None, "", "no caption"), ("LEADIN", "LEADIN", "the trigger phrase alone")])
def test_blank_captions_are_warned_about(tmp_path, trigger, text, said):
    caption = caption_of(tmp_path, b" \t\r\n  ", trigger)
    assert caption.text == text
    assert caption.warnings == (f"caption clips/c.txt is empty: the clip is trained with "
                                f"{said}",)


def test_long_captions_are_cut_to_the_text_limit(tmp_path):
    caption = caption_of(tmp_path, b"word " * (2 * MAX_TEXT_LENGTH), "LEADIN")
    assert len(caption.text) <= MAX_TEXT_LENGTH and caption.text.startswith("LEADIN word")
    assert caption.warnings == (TOO_LONG.format(name="clips/c.txt"),)
    # 2 MiB: reading stops at READ_LIMIT_BYTES, in the middle of an "é"
    huge = caption_of(tmp_path, b"a" + "é".encode() * READ_LIMIT_BYTES)
    assert huge.text == "a" + "é" * (MAX_TEXT_LENGTH - 1)
    assert huge.warnings == (TOO_LONG.format(name="clips/c.txt"),)  # still UTF-8
    exact = caption_of(tmp_path, b"x" * MAX_TEXT_LENGTH)
    assert len(exact.text) == MAX_TEXT_LENGTH and exact.warnings == ()


def test_prepare_records_caption_warnings_by_archive_path(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", 1.2, audio=False)
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("latin", "sub/huge", "blank", "plain"):
            z.write(clip, f"{name}.mp4")
        z.writestr("latin.txt", "crème brûlée".encode("latin-1"))
        z.writestr("sub/huge.txt", b"x" * (10 * 2**20))  # 10 MB
        z.writestr("blank.txt", b"   \n")
        z.writestr("plain.txt", b"a square")
    spec = parse_spec({"trainingDataUrl": archive.as_uri(), "numberOfFrames": 25,
                       "resolution": "low", "aspectRatio": "16:9", "triggerPhrase": "LEADIN"})
    manifest = prepare_dataset(spec, tmp_path / "work",
                               PrepareSettings(fetch=FetchPolicy(allow_file_urls=True)))
    by_source = {s.source: s for s in manifest.samples}
    assert by_source["latin.mp4"].caption == "LEADIN crème brûlée"
    assert by_source["latin.mp4"].warnings == [LEGACY.format(name="latin.txt")]
    assert len(by_source["sub/huge.mp4"].caption) == MAX_TEXT_LENGTH
    assert by_source["sub/huge.mp4"].warnings == [TOO_LONG.format(name="sub/huge.txt")]
    assert by_source["blank.mp4"].caption == "LEADIN"
    assert by_source["plain.mp4"].warnings == []
    for sample in manifest.samples:
        assert set(sample.warnings) <= set(manifest.warnings)
    # the 10 MB caption is not copied into the manifest
    assert (tmp_path / "work/dataset/manifest.json").stat().st_size < 64 * 1024
