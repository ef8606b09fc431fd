"""The prepare stage on real clips made with PyAV."""

from __future__ import annotations

import json
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ltx_contract.manifest import Manifest, Skipped
from ltx_contract.outcomes import InvalidInput
from ltx_contract.spec import parse_spec
from ltx_contract.suffix import AUDIO_SAMPLE_RATE
from ltx_trainer.dataset import TOO_SHORT, FetchPolicy, PrepareSettings, prepare_dataset
from ltx_trainer.dataset.media import probe, read_wav
from ltx_trainer.dataset.prepare import MAX_UPSCALE

from harness.media_factory import make_clip, read_frames

LOCAL = PrepareSettings(fetch=FetchPolicy(allow_file_urls=True))


def zip_clips(dest: Path, clips: dict[str, Path], captions: dict[str, str] | None = None
              ) -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        for name, path in clips.items():
            archive.write(path, name)
        for name, text in (captions or {}).items():
            archive.writestr(name, text)
    return dest


def spec_for(archive: Path, **fields):
    base = {"trainingDataUrl": archive.as_uri(), "numberOfFrames": 25, "resolution": "low",
            "aspectRatio": "16:9", "validationResolution": "low"}
    return parse_spec({**base, **fields})


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "ntsc": make_clip(d / "ntsc.mp4", 2.0, fps=Fraction(24000, 1001), size=(320, 180)),
        "pal": make_clip(d / "pal.mov", 2.0, fps=25, size=(180, 320)),  # portrait
        "sixty": make_clip(d / "sixty.mkv", 1.5, fps=60, size=(203, 117)),  # odd size
        "avi": make_clip(d / "thirty.avi", 2.0, fps=30, size=(160, 96)),
        "silent": make_clip(d / "silent.mp4", 2.0, fps=30, audio=False),
        "short": make_clip(d / "short.mp4", 0.5, fps=24),
        "sync": make_clip(d / "sync.mp4", 3.0, fps=30, flash_at=2.5),
        "scenes": make_clip(d / "scenes.mp4", 9.0, fps=24, cuts=(3.0, 6.0)),
    }


def test_fits_every_rate_and_shape_to_the_bucket(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {
        "ntsc.mp4": clips["ntsc"], "portrait/pal.mov": clips["pal"],
        "sixty.mkv": clips["sixty"], "thirty.avi": clips["avi"]},
        {"ntsc.txt": "a  square\nglides", "portrait/pal.txt": "portrait clip"})
    spec = spec_for(archive, triggerPhrase="LEADIN", numberOfFrames=31, frameRate=24)
    manifest = prepare_dataset(spec, tmp_path / "work", LOCAL)
    dataset = tmp_path / "work" / "dataset"
    assert Manifest.read(dataset) == manifest
    by_source = {s.source: s for s in manifest.samples}
    assert set(by_source) == {"ntsc.mp4", "portrait/pal.mov", "sixty.mkv", "thirty.avi"}
    assert by_source["ntsc.mp4"].caption == "LEADIN a square glides"
    assert by_source["portrait/pal.mov"].caption == "LEADIN portrait clip"
    assert by_source["sixty.mkv"].caption == "LEADIN"  # no caption: the trigger alone
    for sample in manifest.samples:
        frames = read_frames(dataset / sample.video)
        assert frames.shape == (25, 288, 512, 3)  # 31 snaps down to 25; low 16:9
        info = probe(dataset / sample.video)
        assert info.frame_rate == 24
        assert sample.suffix.first_suffix_frame == 17
        assert sample.audio is None  # withAudio off: audio ignored
        assert sample.rotation == 0 and not sample.mirrored  # none of these is turned
        # the window ends at the clip's end
        assert sample.window[1] == pytest.approx(probe(clips_path(clips, sample)).end,
                                                 abs=1e-3)
    assert any("at least 10 are recommended" in w for w in manifest.warnings)
    # the clips without a caption are counted and warned about, with what it costs
    assert not by_source["sixty.mkv"].captioned and not by_source["thirty.avi"].captioned
    assert by_source["ntsc.mp4"].captioned and by_source["portrait/pal.mov"].captioned
    assert manifest.uncaptioned_samples == 2
    assert any(w.startswith("2 of 4 training samples have no caption: they train on the "
                            "trigger phrase 'LEADIN' alone") for w in manifest.warnings)


def test_the_manifest_json_keeps_its_shape(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["ntsc"]}, {"a.txt": "caption"})
    spec = spec_for(archive, withAudio=True, validation=[
        {"prompt": "p", "videoUrl": clips["pal"].as_uri()}])
    prepare_dataset(spec, tmp_path / "work", LOCAL)
    document = json.loads((tmp_path / "work/dataset/manifest.json").read_text())
    assert {"version", "frames", "frameRate", "width", "height", "conditioningFrames",
            "withAudio", "samples", "validation", "skipped", "ignored", "warnings"
            } <= set(document)
    sample, clip = document["samples"][0], document["validation"][0]
    assert {"id", "source", "window", "stretch", "video", "frames", "frameRate", "width",
            "height", "caption", "suffix", "audio", "warnings", "rotation"} <= set(sample)
    assert {"path", "sampleRate", "channels", "samples", "sourcePeak", "normalized",
            "stretched"} <= set(sample["audio"])
    assert sample["suffix"]["closingAudioWindow"] == [pytest.approx(17 / 24, abs=1e-6),
                                                      pytest.approx(25 / 24, abs=1e-6)]
    assert {"index", "prompt", "video", "paddedFrames", "suffix", "audio", "rotation"
            } <= set(clip)
    assert document["version"] == 1 and sample["caption"] == "caption"


def clips_path(clips: dict[str, Path], sample) -> Path:
    name = Path(sample.source).name
    return next(p for p in clips.values() if p.name == name)


def test_all_too_short_is_the_reference_error(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["short"], "b.mp4": clips["short"]})
    with pytest.raises(InvalidInput) as info:
        prepare_dataset(spec_for(archive, numberOfFrames=89), tmp_path / "work", LOCAL)
    assert info.value.message == TOO_SHORT == "All training videos are too short to be trainable"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []


def test_short_clips_are_skipped_and_reported(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["short"], "b.mp4": clips["ntsc"]})
    manifest = prepare_dataset(spec_for(archive), tmp_path / "work", LOCAL)
    assert [s.source for s in manifest.samples] == ["b.mp4"]
    assert manifest.skipped == [Skipped(source="a.mp4", reason="too short")]


def test_auto_scale_stretches_short_clips(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["short"]})
    spec = spec_for(archive, autoScaleInput=True, withAudio=True, numberOfFrames=41)
    manifest = prepare_dataset(spec, tmp_path / "work", LOCAL)
    [sample] = manifest.samples
    assert sample.stretch == pytest.approx((41 / 24) / 0.5, rel=1e-3)
    assert len(read_frames(tmp_path / "work/dataset" / sample.video)) == 41
    audio, rate = read_wav(tmp_path / "work/dataset" / sample.audio.path)
    assert rate == AUDIO_SAMPLE_RATE and audio.shape == (2, round(41 / 24 * rate))
    assert sample.audio.stretched is True
    assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=2e-3)  # -1 dBFS peak


@pytest.mark.parametrize("preserve_pitch", [True, False])
def test_audio_and_video_stay_in_sync(tmp_path, clips, preserve_pitch):
    archive = zip_clips(tmp_path / "d.zip", {"sync.mp4": clips["sync"]})
    spec = spec_for(archive, withAudio=True, numberOfFrames=49, frameRate=24,
                    autoScaleInput=True, audioPreservePitch=preserve_pitch)
    manifest = prepare_dataset(spec, tmp_path / "work", LOCAL)
    for sample in manifest.samples:
        frames = read_frames(tmp_path / "work/dataset" / sample.video)
        audio, rate = read_wav(tmp_path / "work/dataset" / sample.audio.path)
        brightness = frames.mean(axis=(1, 2, 3))
        if brightness.max() < 200:
            continue  # this window does not hold the flash
        flash = int(np.argmax(brightness)) / 24
        click = int(np.argmax(np.abs(audio[0]) > 0.3)) / rate
        assert abs(flash - click) <= 1 / 24, (flash, click)
        assert sample.suffix.closing_audio_window == pytest.approx((41 / 24, 49 / 24),
                                                                   abs=1e-5)
        break
    else:
        pytest.fail("no window holds the sync marker")


def test_with_audio_refuses_silent_clips_by_name(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"ok.mp4": clips["ntsc"],
                                             "sub/silent.mp4": clips["silent"]})
    with pytest.raises(InvalidInput) as info:
        prepare_dataset(spec_for(archive, withAudio=True), tmp_path / "work", LOCAL)
    assert info.value.message == ("withAudio is on, but these clips have no audio track: "
                                  "sub/silent.mp4. Every training and validation clip must "
                                  "contain one.")
    # without audio extension the same dataset is fine and silent
    manifest = prepare_dataset(spec_for(archive), tmp_path / "work2", LOCAL)
    assert len(manifest.samples) == 2


def test_validation_clips(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["ntsc"]})
    spec = spec_for(archive, withAudio=True, conditioningFrames=16, validationNumberOfFrames=57,
                    validationFrameRate=24, validation=[
                        {"prompt": "lead in", "videoUrl": clips["pal"].as_uri()}])
    manifest = prepare_dataset(spec, tmp_path / "work", LOCAL)
    [entry] = manifest.validation
    frames = read_frames(tmp_path / "work/dataset" / entry.video)
    assert frames.shape == (57, 512, 512, 3)  # validation: low, 1:1 by default
    assert entry.padded_frames == 57 - 48  # a 2 s clip holds 48 frames at 24 fps
    assert entry.suffix.first_suffix_frame == 41
    audio, rate = read_wav(tmp_path / "work/dataset" / entry.audio.path)
    assert audio.shape[1] == round(57 / 24 * rate)


def test_short_validation_clip_is_refused_before_fitting(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["ntsc"]})
    spec = spec_for(archive, conditioningFrames=16, validationFrameRate=24,
                    validation=[{"prompt": "p", "videoUrl": clips["short"].as_uri()}])
    with pytest.raises(InvalidInput) as info:
        prepare_dataset(spec, tmp_path / "work", LOCAL)
    assert info.value.message == (
        "The validation clip 1 must be at least conditioningFrames (16) frames long at "
        "validationFrameRate (24 fps); it has 12. Provide a longer closing clip or lower "
        "conditioningFrames.")


def test_silent_validation_clip_with_audio(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["ntsc"]})
    spec = spec_for(archive, withAudio=True,
                    validation=[{"prompt": "p", "videoUrl": clips["silent"].as_uri()}])
    with pytest.raises(InvalidInput, match="no audio track: validation clip 1"):
        prepare_dataset(spec, tmp_path / "work", LOCAL)


def test_corrupt_clips_are_skipped_with_a_warning(tmp_path, clips):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clips["ntsc"].read_bytes()[:2000])
    archive = zip_clips(tmp_path / "d.zip", {"good.mp4": clips["ntsc"], "broken.mp4": broken})
    manifest = prepare_dataset(spec_for(archive), tmp_path / "work", LOCAL)
    assert [s.source for s in manifest.samples] == ["good.mp4"]
    [warning] = [w for w in manifest.warnings if w.startswith("skipped")]
    # named by its path inside the archive; no scratch path (this reaches Job results)
    assert warning == ("skipped broken.mp4: it cannot be decoded (Invalid data found when "
                       "processing input)")
    only_broken = zip_clips(tmp_path / "e.zip", {"sub/broken.mp4": broken})
    with pytest.raises(InvalidInput) as info:
        prepare_dataset(spec_for(only_broken), tmp_path / "work2", LOCAL)
    assert info.value.message == (
        "the archive contains no usable video: none could be decoded (skipped sub/broken.mp4: "
        "it cannot be decoded (Invalid data found when processing input))")
    spec = spec_for(archive, validation=[{"prompt": "p", "videoUrl": broken.as_uri()}])
    with pytest.raises(InvalidInput) as info:
        prepare_dataset(spec, tmp_path / "work3", LOCAL)
    assert info.value.message == ("the validation clip 1 cannot be decoded (Invalid data "
                                  "found when processing input)")


def test_no_video_at_all(tmp_path):
    archive = zip_clips(tmp_path / "d.zip", {}, {"readme.txt": "hello"})
    with pytest.raises(InvalidInput) as info:
        prepare_dataset(spec_for(archive), tmp_path / "work", LOCAL)
    assert info.value.message == "the archive contains no video (.mp4, .mov, .avi or .mkv)"


def test_nested_archives_are_named_not_unpacked(tmp_path, clips):
    inner = zip_clips(tmp_path / "inner.zip", {"a.mp4": clips["ntsc"]})
    archive = zip_clips(tmp_path / "d.zip", {"day1/inner.zip": inner})
    with pytest.raises(InvalidInput) as info:
        prepare_dataset(spec_for(archive), tmp_path / "work", LOCAL)
    assert info.value.message == (
        "the archive contains no video (.mp4, .mov, .avi or .mkv); the archive holds other "
        "archives (day1/inner.zip): nested archives are not unpacked; put their videos in "
        "the top-level archive")
    both = zip_clips(tmp_path / "e.zip", {"b.mp4": clips["ntsc"], "more.zip": inner})
    manifest = prepare_dataset(spec_for(both), tmp_path / "work2", LOCAL)
    assert [s.source for s in manifest.samples] == ["b.mp4"]
    assert ("the archive holds other archives (more.zip): nested archives are not unpacked; "
            "put their videos in the top-level archive") in manifest.warnings


def test_tiny_sources_are_warned_about(tmp_path, clips):
    tiny = make_clip(tmp_path / "tiny.mp4", 1.2, size=(1, 1), audio=False)
    archive = zip_clips(tmp_path / "d.zip", {"dots/tiny.mp4": tiny, "ok.mp4": clips["ntsc"]})
    manifest = prepare_dataset(spec_for(archive), tmp_path / "work", LOCAL)
    by_source = {s.source: s for s in manifest.samples}
    warning = ("dots/tiny.mp4 is only 1×1: fitting it to 512×288 upscales it 512.0×, more "
               f"than {MAX_UPSCALE:g}×, so its frames will be blurry; use a larger source")
    assert warning in manifest.warnings and by_source["dots/tiny.mp4"].warnings == [warning]
    assert by_source["ok.mp4"].warnings == []  # 320×180 to 512×288: 1.6×, no warning
    assert read_frames(tmp_path / "work/dataset" / by_source["dots/tiny.mp4"].video
                       ).shape[1:] == (288, 512, 3)  # still fitted and used


def test_scene_splitting_makes_samples_per_scene(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"scenes.mp4": clips["scenes"]},
                        {"scenes.txt": "three shots"})
    split = spec_for(archive, splitInputDurationThreshold=5.0, numberOfFrames=49)
    manifest = prepare_dataset(split, tmp_path / "work", LOCAL)
    ends = sorted(round(s.window[1], 1) for s in manifest.samples)
    assert ends == [3.0, 6.0, 9.0]  # one window closing each shot: no suffix spans a cut
    assert {s.caption for s in manifest.samples} == {"three shots"}
    whole = spec_for(archive, splitInputIntoScenes=False, numberOfFrames=49)
    ends = sorted(s.window[1] for s in prepare_dataset(
        whole, tmp_path / "work2", LOCAL).samples)
    # 9 s hold four 49-frame windows, tiled back from the end without overlap
    assert ends == pytest.approx([9 - 3 * 49 / 24, 9 - 2 * 49 / 24, 9 - 49 / 24, 9], abs=1e-3)


def test_debug_dataset_archive(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["ntsc"]})
    prepare_dataset(spec_for(archive, debugDataset=True, withAudio=True), tmp_path / "work",
                    LOCAL)
    with zipfile.ZipFile(tmp_path / "work" / "debug_dataset.zip") as debug:
        names = set(debug.namelist())
        manifest = json.loads(debug.read("manifest.json"))
    assert {manifest["samples"][0]["video"], manifest["samples"][0]["audio"]["path"]} <= names


def test_nothing_is_written_outside_the_work_directory(tmp_path, clips):
    archive = zip_clips(tmp_path / "d.zip", {"a.mp4": clips["ntsc"]})
    before = set(tmp_path.iterdir())
    prepare_dataset(spec_for(archive), tmp_path / "work", LOCAL)
    assert set(tmp_path.iterdir()) - before == {tmp_path / "work"}
    assert {p.name for p in (tmp_path / "work").iterdir()} == {"dataset"}
