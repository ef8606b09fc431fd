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

Messages name clips by their path inside the archive (validation clips by number):
they reach the user in the Job's result, where a scratch path would mean nothing.
"""

from __future__ import annotations

import gc
import logging
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ltx_contract.manifest import (
    AudioRecord,
    Manifest,
    Sample,
    Skipped,
    SuffixRecord,
    ValidationClip,
    held_out_sources,
    uncaptioned_warning,
)
from ltx_contract.outcomes import InvalidInput
from ltx_contract.spec import MIN_CLIPS_TO_HOLD_OUT, TrainingSpec
from ltx_contract.suffix import SuffixWindow

from . import archive, media
from .captions import read_caption
from .fetch import FetchPolicy, fetch

log = logging.getLogger(__name__)

TOO_SHORT = "All training videos are too short to be trainable"
RECOMMENDED_CLIPS = 10
#: Beyond this upscale (in either side) fitting invents the detail: warned, still used.
MAX_UPSCALE = 4.0


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


def upscale_warning(what: str, info: media.ClipInfo, size: tuple[int, int]) -> str | None:
    """A warning when fitting `info`'s frame (as displayed) to `size` upscales it more
    than MAX_UPSCALE; `what` names the clip."""
    factor = max(size[0] / info.width, size[1] / info.height)
    if factor <= MAX_UPSCALE:
        return None
    return (f"{what} is only {info.width}×{info.height}: fitting it to {size[0]}×{size[1]} "
            f"upscales it {factor:.1f}×, more than {MAX_UPSCALE:g}×, so its frames will be "
            "blurry; use a larger source")


@dataclass
class _Clip:
    relative: PurePosixPath
    path: Path
    info: media.ClipInfo
    caption: str
    warnings: list[str]  # about this clip, copied onto each of its samples
    captioned: bool = True  # False: no caption or an empty one


def _discover(spec: TrainingSpec, root: Path, contents: archive.ArchiveContents,
              warnings: list[str], skipped: list[Skipped], failures: list[str]
              ) -> list[_Clip]:
    """Probe each video and read its caption; undecodable clips go to `skipped`, with
    their message in `failures`."""
    clips = []
    for relative in contents.videos:
        path = root / relative
        try:
            info = media.probe(path)
        except media.Undecodable as exc:
            failures.append(f"skipped {relative}: it cannot be decoded ({exc})")
            skipped.append(Skipped(source=relative.as_posix(), reason="undecodable"))
            continue
        caption_file = contents.captions.get(relative)
        caption = read_caption(root / caption_file if caption_file else None,
                               caption_file.as_posix() if caption_file else "",
                               spec.trigger_phrase)
        notes = list(caption.warnings)
        if note := upscale_warning(relative.as_posix(), info, spec.frame_size):
            notes.append(note)
        warnings.extend(notes)
        clips.append(_Clip(relative, path, info, caption.text, notes, caption.described))
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


def _suffix(frames: int, rate: int, conditioning_frames: int) -> SuffixRecord:
    return SuffixRecord.model_validate(SuffixWindow(frames, rate, conditioning_frames).as_dict())


def _audio_record(wav: Path, out: Path, fitted: dict[str, object]) -> AudioRecord:
    return AudioRecord.model_validate({"path": wav.relative_to(out).as_posix(), **fitted})


def _fit_sample(spec: TrainingSpec, clip: _Clip, window: media.Window, sample_id: str,
                out: Path) -> Sample:
    size = spec.frame_size
    video = out / "samples" / f"{sample_id}.mp4"
    media.fit_video(clip.path, video, window, size, clip.info.orientation)
    audio = None
    if spec.with_audio:
        wav = out / "samples" / f"{sample_id}.wav"
        audio = _audio_record(wav, out, media.fit_audio(
            clip.path, wav, window, normalize=spec.audio_normalize,
            preserve_pitch=spec.audio_preserve_pitch))
    return Sample(
        id=sample_id,
        source=clip.relative.as_posix(),
        window=(round(window.start, 6), round(window.start + window.source_duration, 6)),
        stretch=round(window.stretch, 6),
        video=video.relative_to(out).as_posix(),
        frames=window.frames,
        frame_rate=window.frame_rate,
        width=size[0],
        height=size[1],
        caption=clip.caption,
        captioned=clip.captioned,
        suffix=_suffix(window.frames, window.frame_rate, spec.conditioning_frames),
        audio=audio,
        rotation=clip.info.orientation.rotation,
        mirrored=clip.info.orientation.mirrored,
        warnings=list(clip.warnings),
    )


def fit_closing_clip(source: Path, info: media.ClipInfo, frames: int, rate: int,
                     size: tuple[int, int], video_dest: Path, audio_dest: Path | None, *,
                     normalize: bool, preserve_pitch: bool) -> tuple[int, dict | None]:
    """Fit the last `frames` frames of a closing clip, as displayed (its rotation
    applied, as for training samples); a shorter clip is padded at the front with its
    first frame (that part is generated anyway). Returns the padded frame count and
    what was recorded about the audio."""
    available = min(frames, media.frames_in(info.duration, rate))
    window = media.Window(info.end - available / rate, available / rate, available, rate)
    pad = frames - available
    media.fit_video(source, video_dest, window, size, info.orientation, pad_front=pad)
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
                    out: Path) -> ValidationClip:
    frames, rate = spec.validation_number_of_frames, spec.validation_frame_rate
    video = out / "validation" / f"{index}.mp4"
    wav = out / "validation" / f"{index}.wav" if spec.with_audio else None
    pad, audio = fit_closing_clip(path, info, frames, rate, spec.validation_frame_size, video,
                                  wav, normalize=spec.audio_normalize,
                                  preserve_pitch=spec.audio_preserve_pitch)
    return ValidationClip(
        index=index,
        prompt=validation_prompt(spec, spec.validation[index].prompt),
        video=video.relative_to(out).as_posix(),
        frames=frames,
        frame_rate=rate,
        width=spec.validation_frame_size[0],
        height=spec.validation_frame_size[1],
        padded_frames=pad,
        suffix=_suffix(frames, rate, spec.conditioning_frames),
        audio=None if wav is None or audio is None else _audio_record(wav, out, audio),
        rotation=info.orientation.rotation,
        mirrored=info.orientation.mirrored,
    )


def prepare_dataset(spec: TrainingSpec, work_dir: Path,
                    settings: PrepareSettings | None = None) -> Manifest:
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
        manifest.write(staging)
        if spec.debug_dataset:
            _write_debug_zip(staging, work_dir / "debug_dataset.zip")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def _prepare(spec: TrainingSpec, scratch: Path, out: Path, settings: PrepareSettings
             ) -> Manifest:
    log.info("fetching the training data")
    zip_path = fetch(spec.training_data_url, scratch / "training-data.zip", "training data",
                     settings.fetch)
    root = scratch / "extracted"
    contents = archive.unpack(zip_path, root, settings.archive)
    if not contents.videos:
        nested = f"; {archive.nested_archives_message(contents)}" if contents.archives else ""
        raise InvalidInput(f"the archive contains no video (.mp4, .mov, .avi or .mkv){nested}")
    warnings: list[str] = []
    if contents.archives:
        warnings.append(archive.nested_archives_message(contents))
    skipped: list[Skipped] = []
    failures: list[str] = []  # "skipped …": clips and windows that could not be read
    clips = _discover(spec, root, contents, warnings, skipped, failures)
    if not clips:
        raise InvalidInput("the archive contains no usable video: none could be decoded ("
                           + "; ".join(failures[:5]) + ")")
    validation = _fetch_validation(spec, scratch, settings)
    _check_audio(spec, clips, validation)
    for index, (_, info) in enumerate(validation):
        if note := upscale_warning(f"validation clip {index + 1}", info,
                                   spec.validation_frame_size):
            warnings.append(note)

    samples: list[Sample] = []
    for clip in clips:
        spans = [(clip.info.start, clip.info.end)]
        threshold = spec.split_input_duration_threshold
        if spec.split_input_into_scenes and clip.info.duration > threshold:
            spans = detect_scenes(clip.path, clip.info)
            log.info("%s: %d scene(s)", clip.relative, len(spans))
        if clip.info.orientation.filters:
            log.info("%s: turned %d° clockwise%s to be fitted as displayed", clip.relative,
                     clip.info.orientation.rotation,
                     " and mirrored" if clip.info.orientation.mirrored else "")
        windows = [w for start, end in spans for w in plan_windows(
            start, end, spec.number_of_frames, spec.frame_rate, spec.auto_scale_input,
            settings.max_windows_per_clip)]
        if not windows:
            skipped.append(Skipped(source=clip.relative.as_posix(), reason="too short"))
            log.info("%s: too short, skipped", clip.relative)
            continue
        for window in windows:
            sample_id = _sample_id(len(samples), clip.relative)
            try:
                samples.append(_fit_sample(spec, clip, window, sample_id, out))
            except media.Undecodable as exc:
                failures.append(f"skipped a window of {clip.relative}: {exc}")
        log.info("%s: %d sample(s)", clip.relative, len(windows))
    if not samples:
        if not failures:  # every clip was too short
            raise InvalidInput(TOO_SHORT)
        short = sum(1 for s in skipped if s.reason == "too short")
        raise InvalidInput("no usable training sample could be made: " + "; ".join(failures[:5])
                           + (f"; {short} clip(s) too short" if short else ""))
    warnings.extend(failures)
    uncaptioned = sum(not s.captioned for s in samples)
    if uncaptioned:
        warnings.append(uncaptioned_warning(uncaptioned, len(samples), spec.trigger_phrase))
    _hold_out(spec, samples, warnings)
    if len(clips) < RECOMMENDED_CLIPS:
        warnings.append(f"only {len(clips)} clip(s); at least {RECOMMENDED_CLIPS} are "
                        "recommended")
    for message in warnings:
        log.warning("%s", message)
    return Manifest(
        frames=spec.number_of_frames,
        frame_rate=spec.frame_rate,
        width=spec.frame_size[0],
        height=spec.frame_size[1],
        conditioning_frames=spec.conditioning_frames,
        with_audio=spec.with_audio,
        samples=samples,
        validation=[_fit_validation(spec, i, path, info, out)
                    for i, (path, info) in enumerate(validation)],
        skipped=skipped,
        ignored=contents.ignored,
        warnings=warnings,
        uncaptioned_samples=uncaptioned,
    )


def _hold_out(spec: TrainingSpec, samples: list[Sample], warnings: list[str]) -> None:
    """Mark the windows of the held-out clips (`held_out_sources`); say so when the
    dataset is too small to hold any out."""
    sources = {s.source for s in samples}
    held = held_out_sources(sources, spec.held_out_share)
    for sample in samples:
        sample.held_out = sample.source in held
    if held:
        log.info("held out of training for the validation loss: %s", ", ".join(sorted(held)))
    elif spec.held_out_share > 0:
        warnings.append(f"only {len(sources)} clip(s) gave samples: none is held out "
                        f"(heldOutShare needs {MIN_CLIPS_TO_HOLD_OUT} or more), so the "
                        "validation loss is computed on the training windows")


def _write_debug_zip(dataset: Path, dest: Path) -> None:
    partial = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(dataset.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(dataset).as_posix())
    partial.replace(dest)


