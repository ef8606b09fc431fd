"""The prepare stage: from the spec's URLs to a fitted, suffix-ready dataset.

Every dataset error surfaces here, before a GPU is asked for: an InvalidInput or a
DownloadFailure with a message for the user. The dataset is written to a staging
folder and moved into place only when complete, so a failure leaves nothing behind.

Which windows of a clip become samples: windows end at the end of the clip (or of
its scene) and tile backward without overlap, at most `max_windows_per_clip` of
them. The suffix the model learns to lead up to is then a real ending, the moment
the clip was cut on, rather than an arbitrary mid-shot instant; non-overlapping
windows use more of a long clip without repeating a suffix, and the cap keeps one
long clip from dominating the dataset.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ltx_contract.outcomes import InvalidInput
from ltx_contract.spec import TrainingSpec
from ltx_contract.suffix import SuffixWindow

from . import archive, media
from .fetch import FetchPolicy, fetch

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TOO_SHORT = "All training videos are too short to be trainable"
RECOMMENDED_CLIPS = 10


@dataclass(frozen=True)
class PrepareSettings:
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    archive: archive.ArchiveLimits = field(default_factory=archive.ArchiveLimits)
    max_windows_per_clip: int = 4


def plan_windows(start: float, end: float, frames: int, frame_rate: int, auto_scale: bool,
                 limit: int) -> list[media.Window]:
    """Windows of `frames` frames at `frame_rate` in source seconds [start, end],
    latest first; [] when the span is too short and auto-scaling is off."""
    length = frames / frame_rate
    available = media.frames_in(end - start, frame_rate)
    if available >= frames:
        count = min(limit, available // frames)
        return [media.Window(end - (k + 1) * length, length, frames, frame_rate)
                for k in range(count)]
    if auto_scale and end - start > 0:
        return [media.Window(start, end - start, frames, frame_rate)]
    return []


def detect_scenes(path: Path, clip: media.ClipInfo) -> list[tuple[float, float]]:
    """Scene spans in seconds (PySceneDetect's content detector); the whole clip when
    no cut is found."""
    from scenedetect import ContentDetector, SceneManager, open_video

    manager = SceneManager()
    manager.add_detector(ContentDetector())
    video = open_video(str(path), backend="pyav")
    try:
        manager.detect_scenes(video)
    finally:
        del video  # closes the decoder now, before any fitting starts
        gc.collect()
    spans = [(s.seconds, e.seconds) for s, e in manager.get_scene_list()]
    return spans or [(clip.start, clip.end)]


def _sample_id(index: int, relative: PurePosixPath) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", relative.with_suffix("").as_posix()).strip("-")
    return f"{index:04d}-{stem[:80] or 'clip'}"


def _caption(spec: TrainingSpec, text: str) -> str:
    text = " ".join(text.split())
    if spec.trigger_phrase:
        return f"{spec.trigger_phrase} {text}".strip()
    return text


@dataclass
class _Clip:
    relative: PurePosixPath
    path: Path
    info: media.ClipInfo
    caption: str


def _discover(spec: TrainingSpec, root: Path, contents: archive.ArchiveContents,
              warnings: list[str], skipped: list[dict[str, str]]) -> list[_Clip]:
    clips = []
    for relative in contents.videos:
        path = root / relative
        try:
            info = media.probe(path)
        except media.Undecodable as exc:
            warnings.append(f"skipped {relative}: it cannot be decoded ({exc})")
            skipped.append({"source": relative.as_posix(), "reason": "undecodable"})
            continue
        caption_file = contents.captions.get(relative)
        text = (root / caption_file).read_text(encoding="utf-8", errors="replace") \
            if caption_file else ""
        clips.append(_Clip(relative, path, info, _caption(spec, text)))
    return clips


def _fetch_validation(spec: TrainingSpec, work: Path, settings: PrepareSettings
                      ) -> list[tuple[Path, media.ClipInfo]]:
    """Fetch and check each validation clip (length, audio) before any fitting."""
    out = []
    for index, sample in enumerate(spec.validation):
        what = f"validation clip {index + 1}"
        suffix = PurePosixPath(sample.video_url.split("?", 1)[0]).suffix.lower() or ".mp4"
        path = fetch(sample.video_url, work / f"validation-{index}{suffix}", what,
                     settings.fetch)
        try:
            info = media.probe(path)
        except media.Undecodable as exc:
            raise InvalidInput(f"the {what} cannot be decoded ({exc})") from None
        frames = media.frames_in(info.duration, spec.validation_frame_rate)
        if frames < spec.conditioning_frames:
            raise InvalidInput(
                f"The {what} must be at least conditioningFrames ({spec.conditioning_frames}) "
                f"frames long at validationFrameRate ({spec.validation_frame_rate} fps); it has "
                f"{frames}. Provide a longer closing clip or lower conditioningFrames."
            )
        out.append((path, info))
    return out


def _check_audio(spec: TrainingSpec, clips: list[_Clip],
                 validation: list[tuple[Path, media.ClipInfo]]) -> None:
    if not spec.with_audio:
        return
    silent = [c.relative.as_posix() for c in clips if not c.info.has_audio]
    silent += [f"validation clip {i + 1}" for i, (_, info) in enumerate(validation)
               if not info.has_audio]
    if silent:
        shown = ", ".join(silent[:10]) + (f" and {len(silent) - 10} more"
                                          if len(silent) > 10 else "")
        raise InvalidInput(f"withAudio is on, but these clips have no audio track: {shown}. "
                           "Every training and validation clip must contain one.")


def _fit_sample(spec: TrainingSpec, clip: _Clip, window: media.Window, sample_id: str,
                out: Path) -> dict[str, Any]:
    size = spec.frame_size
    video = out / "samples" / f"{sample_id}.mp4"
    media.fit_video(clip.path, video, window, size)
    entry: dict[str, Any] = {
        "id": sample_id,
        "source": clip.relative.as_posix(),
        "window": [round(window.start, 6), round(window.start + window.source_duration, 6)],
        "stretch": round(window.stretch, 6),
        "video": video.relative_to(out).as_posix(),
        "frames": window.frames,
        "frameRate": window.frame_rate,
        "width": size[0],
        "height": size[1],
        "caption": clip.caption,
        "suffix": SuffixWindow(window.frames, window.frame_rate,
                               spec.conditioning_frames).as_dict(),
        "audio": None,
        "warnings": [],
    }
    if spec.with_audio:
        wav = out / "samples" / f"{sample_id}.wav"
        entry["audio"] = {"path": wav.relative_to(out).as_posix(), **media.fit_audio(
            clip.path, wav, window, normalize=spec.audio_normalize,
            preserve_pitch=spec.audio_preserve_pitch)}
    return entry


def fit_closing_clip(source: Path, info: media.ClipInfo, frames: int, rate: int,
                     size: tuple[int, int], video_dest: Path, audio_dest: Path | None, *,
                     normalize: bool, preserve_pitch: bool) -> tuple[int, dict | None]:
    """Fit the last `frames` frames of a closing clip; a shorter clip is padded at the
    front with its first frame (that part is generated anyway). Returns the padded
    frame count and what was recorded about the audio."""
    available = min(frames, media.frames_in(info.duration, rate))
    window = media.Window(info.end - available / rate, available / rate, available, rate)
    pad = frames - available
    media.fit_video(source, video_dest, window, size, pad_front=pad)
    audio = None
    if audio_dest is not None:
        audio = media.fit_audio(source, audio_dest, window, normalize=normalize,
                                preserve_pitch=preserve_pitch, pad_front_seconds=pad / rate)
    return pad, audio


def validation_prompt(spec: TrainingSpec, prompt: str) -> str:
    """A validation prompt as it is used: with the trigger phrase in front unless it
    already holds it (training captions always start with it)."""
    if spec.trigger_phrase and spec.trigger_phrase not in prompt:
        return f"{spec.trigger_phrase} {prompt}".strip()
    return prompt


def _fit_validation(spec: TrainingSpec, index: int, path: Path, info: media.ClipInfo,
                    out: Path) -> dict[str, Any]:
    frames, rate = spec.validation_number_of_frames, spec.validation_frame_rate
    video = out / "validation" / f"{index}.mp4"
    wav = out / "validation" / f"{index}.wav" if spec.with_audio else None
    pad, audio = fit_closing_clip(path, info, frames, rate, spec.validation_frame_size, video,
                                  wav, normalize=spec.audio_normalize,
                                  preserve_pitch=spec.audio_preserve_pitch)
    return {
        "index": index,
        "prompt": validation_prompt(spec, spec.validation[index].prompt),
        "video": video.relative_to(out).as_posix(),
        "frames": frames,
        "frameRate": rate,
        "width": spec.validation_frame_size[0],
        "height": spec.validation_frame_size[1],
        "paddedFrames": pad,
        "suffix": SuffixWindow(frames, rate, spec.conditioning_frames).as_dict(),
        "audio": None if wav is None else {"path": wav.relative_to(out).as_posix(), **audio},
    }


def prepare_dataset(spec: TrainingSpec, work_dir: Path,
                    settings: PrepareSettings | None = None) -> dict[str, Any]:
    """Build `work_dir/dataset` (samples, validation clips, manifest.json, and with
    debugDataset `work_dir/debug_dataset.zip`); returns the manifest."""
    settings = settings or PrepareSettings()
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = work_dir / "scratch"
    staging = work_dir / "dataset.partial"
    final = work_dir / "dataset"
    for path in (scratch, staging):
        shutil.rmtree(path, ignore_errors=True)
    (staging / "samples").mkdir(parents=True)
    (staging / "validation").mkdir()
    scratch.mkdir()
    try:
        manifest = _prepare(spec, scratch, staging, settings)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if spec.debug_dataset:
            _write_debug_zip(staging, work_dir / "debug_dataset.zip")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def _prepare(spec: TrainingSpec, scratch: Path, out: Path, settings: PrepareSettings
             ) -> dict[str, Any]:
    log.info("fetching the training data")
    zip_path = fetch(spec.training_data_url, scratch / "training-data.zip", "training data",
                     settings.fetch)
    root = scratch / "extracted"
    contents = archive.unpack(zip_path, root, settings.archive)
    if not contents.videos:
        raise InvalidInput("the archive contains no video (.mp4, .mov, .avi or .mkv)")
    warnings: list[str] = []
    skipped: list[dict[str, str]] = []
    clips = _discover(spec, root, contents, warnings, skipped)
    if not clips:
        raise InvalidInput("the archive contains no usable video: none could be decoded ("
                           + "; ".join(warnings[:5]) + ")")
    validation = _fetch_validation(spec, scratch, settings)
    _check_audio(spec, clips, validation)

    samples: list[dict[str, Any]] = []
    for clip in clips:
        spans = [(clip.info.start, clip.info.end)]
        threshold = spec.split_input_duration_threshold
        if spec.split_input_into_scenes and clip.info.duration > threshold:
            spans = detect_scenes(clip.path, clip.info)
            log.info("%s: %d scene(s)", clip.relative, len(spans))
        windows = [w for start, end in spans for w in plan_windows(
            start, end, spec.number_of_frames, spec.frame_rate, spec.auto_scale_input,
            settings.max_windows_per_clip)]
        if not windows:
            skipped.append({"source": clip.relative.as_posix(), "reason": "too short"})
            log.info("%s: too short, skipped", clip.relative)
            continue
        for window in windows:
            sample_id = _sample_id(len(samples), clip.relative)
            try:
                samples.append(_fit_sample(spec, clip, window, sample_id, out))
            except media.Undecodable as exc:
                warnings.append(f"skipped a window of {clip.relative}: {exc}")
        log.info("%s: %d sample(s)", clip.relative, len(windows))
    if not samples:
        if all(s["reason"] == "too short" for s in skipped):
            raise InvalidInput(TOO_SHORT)
        raise InvalidInput("no usable training sample could be made: " + "; ".join(warnings[:5]))
    if len(clips) < RECOMMENDED_CLIPS:
        warnings.append(f"only {len(clips)} clip(s); at least {RECOMMENDED_CLIPS} are "
                        "recommended")
    for message in warnings:
        log.warning("%s", message)
    return {
        "version": 1,
        "frames": spec.number_of_frames,
        "frameRate": spec.frame_rate,
        "width": spec.frame_size[0],
        "height": spec.frame_size[1],
        "conditioningFrames": spec.conditioning_frames,
        "withAudio": spec.with_audio,
        "samples": samples,
        "validation": [_fit_validation(spec, i, path, info, out)
                       for i, (path, info) in enumerate(validation)],
        "skipped": skipped,
        "ignored": contents.ignored,
        "warnings": warnings,
    }


def _write_debug_zip(dataset: Path, dest: Path) -> None:
    partial = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(dataset.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(dataset).as_posix())
    partial.replace(dest)


