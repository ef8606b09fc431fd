"""Clips stored turned (display matrix or legacy `rotate` tag) are fitted as displayed."""

from __future__ import annotations

import zipfile

import pytest

from ltx_contract.manifest import Manifest
from ltx_contract.spec import parse_spec
from ltx_trainer.dataset import FetchPolicy, PrepareSettings, prepare_dataset
from ltx_trainer.dataset.media import probe
from ltx_trainer.dataset.orientation import UPRIGHT, from_display_matrix, from_rotate_tag

from harness.media_factory import make_turned_clip, quadrant_means, read_frames

LOCAL = PrepareSettings(fetch=FetchPolicy(allow_file_urls=True))
#: (name in the archive, clockwise degrees, how it is stored, mirrored)
TURNED = [
    ("matrix-90.mp4", 90, "matrix", False),
    ("matrix-180.mp4", 180, "matrix", False),
    ("matrix-270.mov", 270, "matrix", False),
    ("tag-90.mkv", 90, "tag", False),
    ("selfie-90.mp4", 90, "matrix", True),
]


def assert_top_left_marker(frame, what: str) -> None:
    top_left, *others = quadrant_means(frame)
    assert top_left > 200 and max(others) < 40, (what, top_left, others)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Manifest, object]:
    root = tmp_path_factory.mktemp("turned")
    archive = root / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, clockwise, how, mirrored in TURNED:
            clip = make_turned_clip(root / name, clockwise, how=how, mirrored=mirrored,
                                    seconds=1.5)
            z.write(clip, name)
    closing = make_turned_clip(root / "closing.mp4", 270, seconds=1.0)
    # a portrait bucket: the portrait clips fill it after turning, as they are shown
    spec = parse_spec({"trainingDataUrl": archive.as_uri(), "numberOfFrames": 25,
                       "resolution": "low", "aspectRatio": "9:16",
                       "validationResolution": "low", "validationAspectRatio": "9:16",
                       "validationNumberOfFrames": 25, "validationFrameRate": 24,
                       "conditioningFrames": 8,
                       "validation": [{"prompt": "p", "videoUrl": closing.as_uri()}]})
    work = root / "work"
    return prepare_dataset(spec, work, LOCAL), work / "dataset"


@pytest.mark.parametrize(("name", "clockwise", "how", "mirrored"), TURNED)
def test_a_marker_on_top_as_displayed_is_on_top_in_the_sample(prepared, name, clockwise, how,
                                                              mirrored):
    manifest, dataset = prepared
    [sample] = [s for s in manifest.samples if s.source == name]
    assert (sample.rotation, sample.mirrored) == (clockwise, mirrored)
    frames = read_frames(dataset / sample.video)
    assert frames.shape == (25, 512, 288, 3)
    assert_top_left_marker(frames[len(frames) // 2], name)
    assert probe(dataset / sample.video).orientation == UPRIGHT  # stored as it is shown


def test_validation_closing_clips_are_fitted_as_displayed(prepared):
    manifest, dataset = prepared
    [clip] = manifest.validation
    assert clip.rotation == 270 and clip.padded_frames == 1
    frames = read_frames(dataset / clip.video)
    assert frames.shape == (25, 512, 288, 3)
    assert_top_left_marker(frames[-1], "closing clip")
    on_disk = Manifest.read(dataset)
    assert on_disk.validation[0].rotation == 270
    assert {s.source: s.rotation for s in on_disk.samples}["matrix-90.mp4"] == 90


def test_probe_reports_the_displayed_size(tmp_path):
    clip = make_turned_clip(tmp_path / "c.mp4", 90, displayed=(96, 160), seconds=0.5)
    info = probe(clip)
    assert (info.width, info.height) == (96, 160)  # coded 160×96


def _matrix(a: int, b: int, c: int, d: int) -> list[int]:
    return [a * 65536, b * 65536, 0, c * 65536, d * 65536, 0, 0, 0, 1 << 30]


def test_display_matrices_map_to_ffmpeg_filters():
    assert from_display_matrix(_matrix(1, 0, 0, 1)) == UPRIGHT
    assert from_display_matrix(_matrix(0, 1, -1, 0)).filters == (("transpose", "clock"),)
    assert from_display_matrix(_matrix(0, -1, 1, 0)).filters == (("transpose", "cclock"),)
    assert from_display_matrix(_matrix(-1, 0, 0, -1)).filters == (("hflip", None),
                                                                  ("vflip", None))
    vertical = from_display_matrix(_matrix(1, 0, 0, -1))
    assert (vertical.rotation, vertical.mirrored, vertical.filters) == (180, True,
                                                                        (("vflip", None),))
    assert from_display_matrix([0] * 9) == UPRIGHT  # degenerate: shown as coded


def test_odd_angles_and_bad_tags():
    tilted = from_rotate_tag("45")
    assert tilted.rotation == 45 and tilted.filters[0][0] == "rotate"
    assert tilted.displayed_size(160, 96) == (160, 96)  # `rotate` keeps the frame size
    assert from_rotate_tag("-90").filters == (("transpose", "cclock"),)
    for bad in ("", "sideways", "nan", "inf"):
        assert from_rotate_tag(bad) == UPRIGHT
