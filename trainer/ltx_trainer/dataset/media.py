"""Probing and fitting clips with PyAV.

Fitting streams: frames are decoded in order, each output frame takes the source
frame nearest its time, goes through an ffmpeg filter graph (turn upright as the clip
is displayed, scale to fill, centre crop) and is encoded at once, so memory does not
grow with a clip's length. The audio of exactly the same window is resampled to the
model's rate, time-stretched when fitting changed the duration, peak-normalized and
padded to the exact length.
"""

from __future__ import annotations

import gc
import itertools
import math
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ltx_contract.suffix import AUDIO_SAMPLE_RATE

from .orientation import UPRIGHT, Orientation, read_orientation

AUDIO_CHANNELS = 2
PEAK_TARGET = 10 ** (-1 / 20)  # -1 dBFS
ENCODER = {"crf": "12", "preset": "veryfast"}


def frames_in(seconds: float, rate: float) -> int:
    """Whole frames a span of `seconds` holds at `rate` (a hair of slack for float error)."""
    return math.floor(seconds * rate + 1e-6)


class Undecodable(Exception):
    """A clip that cannot be read; it is skipped with a warning naming it."""


def describe(exc: av.FFmpegError) -> str:
    """What went wrong, without the file name: callers name the clip as the user knows
    it, never by the scratch path it was unpacked to."""
    return exc.strerror or type(exc).__name__


@dataclass(frozen=True)
class ClipInfo:
    frame_rate: float
    frames: int
    start: float  # seconds of the first video frame
    duration: float
    width: int  # as displayed (after `orientation`)
    height: int
    has_audio: bool
    orientation: Orientation = UPRIGHT

    @property
    def end(self) -> float:
        return self.start + self.duration


def probe(path: Path) -> ClipInfo:
    """Frame rate, frame count, duration, size and audio presence; raises Undecodable."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise Undecodable("it has no video stream")
            video = container.streams.video[0]
            rate = float(video.average_rate or video.guessed_rate or 0)
            if rate <= 0:
                raise Undecodable("it has no frame rate")
            if video.duration is not None and video.time_base is not None:
                duration = float(video.duration * video.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                raise Undecodable("it has no duration")
            start = float(video.start_time * video.time_base) if video.start_time else 0.0
            first = next(container.decode(video), None)
            if first is None:
                raise Undecodable("no frame could be decoded")
            orientation = read_orientation(first, video)
            width, height = orientation.displayed_size(first.width, first.height)
            # reading side data ties the frame in a cycle with PyAV's side-data container:
            # free it (a full decoded picture) now rather than at some later collection
            del first
            gc.collect()
            return ClipInfo(
                frame_rate=rate,
                frames=video.frames or round(duration * rate),
                start=start,
                duration=duration,
                width=width,
                height=height,
                has_audio=bool(container.streams.audio),
                orientation=orientation,
            )
    except av.FFmpegError as exc:
        raise Undecodable(describe(exc)) from None


@dataclass(frozen=True)
class Window:
    """`frames` output frames at `frame_rate` taken from source seconds
    [start, start + source_duration]; a source_duration other than frames/frame_rate
    means the window is time-stretched (auto-scaled)."""

    start: float
    source_duration: float
    frames: int
    frame_rate: int

    @property
    def duration(self) -> float:
        return self.frames / self.frame_rate

    @property
    def stretch(self) -> float:
        """Output duration / source duration (1 when nothing is stretched)."""
        return self.duration / self.source_duration


def _fit_graph(stream: av.VideoStream, orientation: Orientation, width: int, height: int
               ) -> av.filter.Graph:
    """One graph: turn the coded frame upright, scale to fill, centre crop."""
    graph = av.filter.Graph()
    chain = [
        graph.add_buffer(template=stream),
        *(graph.add(name, args) for name, args in orientation.filters),
        graph.add("scale", f"w={width}:h={height}:force_original_aspect_ratio=increase"),
        graph.add("crop", f"{width}:{height}"),
        graph.add("format", "yuv420p"),
        graph.add("buffersink"),
    ]
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    graph.configure()
    return graph


def fit_video(source: Path, dest: Path, window: Window, size: tuple[int, int],
              orientation: Orientation, pad_front: int = 0) -> int:
    """Write `window` of `source` as H.264 at `size`; returns frames written.

    `orientation` (the clip's, from `probe`) turns the coded frame as it is displayed.
    `pad_front` repeats the first frame that many times before the window (used for
    validation clips shorter than the preview: the lead-in is generated anyway).
    """
    try:
        return _fit_video(source, dest, window, size, orientation, pad_front)
    except av.FFmpegError as exc:
        dest.unlink(missing_ok=True)
        raise Undecodable(describe(exc)) from None


def _fit_video(source: Path, dest: Path, window: Window, size: tuple[int, int],
               orientation: Orientation, pad_front: int) -> int:
    width, height = size
    step = window.source_duration / window.frames
    targets = [window.start + i * step for i in range(window.frames)]
    with av.open(str(source)) as inp, av.open(str(dest), "w") as out:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        encoder = out.add_stream("libx264", rate=window.frame_rate, options=dict(ENCODER))
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.codec_context.time_base = Fraction(1, window.frame_rate)
        graph = _fit_graph(stream, orientation, width, height)
        written = 0

        def emit(frame: av.VideoFrame, copies: int = 1) -> None:
            nonlocal written
            graph.push(frame)
            fitted = graph.pull()
            fitted.pict_type = av.video.frame.PictureType.NONE  # let x264 place keyframes
            for _ in range(copies):
                fitted.pts, fitted.time_base = written, encoder.codec_context.time_base
                for packet in encoder.encode(fitted):
                    out.mux(packet)
                written += 1

        if window.start > 0:
            inp.seek(int(window.start / stream.time_base), stream=stream, backward=True)
        index, previous = 0, None
        for frame in inp.decode(stream):
            if frame.time is None:
                continue
            # every target closer to `previous` than to this frame shows `previous`
            while index < len(targets) and (
                (previous is None and targets[index] <= frame.time)
                or (previous is not None and targets[index] < (previous.time + frame.time) / 2)
            ):
                chosen = previous if previous is not None else frame
                emit(chosen, 1 + (pad_front if written == 0 else 0))
                index += 1
            if index == len(targets):
                break
            previous = frame
        if index < len(targets) and previous is not None:
            # the stream ended: the last frame stands for targets within its display time
            last_shown_until = previous.time + 1.5 / float(stream.average_rate or 1)
            while index < len(targets) and targets[index] <= last_shown_until:
                emit(previous, 1 + (pad_front if written == 0 else 0))
                index += 1
        for packet in encoder.encode(None):
            out.mux(packet)
    if index < len(targets):
        dest.unlink(missing_ok=True)
        raise Undecodable(f"it ended after {index} of the {len(targets)} frames needed")
    return written


def _decode_audio(source: Path, start: float, duration: float) -> np.ndarray:
    """Samples of [start, start + duration] at the model's rate, (channels, samples)."""
    count = max(1, round(duration * AUDIO_SAMPLE_RATE))
    out = np.zeros((AUDIO_CHANNELS, count), dtype=np.float32)
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_SAMPLE_RATE)
    with av.open(str(source)) as inp:
        stream = inp.streams.audio[0]
        if start > 0:
            inp.seek(int(start / stream.time_base), stream=stream, backward=True)
        position = None
        frames = inp.decode(stream)
        for frame in [*frames, None]:
            if frame is not None:
                if frame.time is None:
                    continue
                if frame.time > start + duration:
                    frame = None
            if position is None:
                if frame is None:
                    break
                position = round((frame.time - start) * AUDIO_SAMPLE_RATE)
            for chunk in resampler.resample(frame):
                data = chunk.to_ndarray()
                lo, hi = max(position, 0), min(position + data.shape[1], count)
                if hi > lo:
                    out[:, lo:hi] = data[:, lo - position:hi - position]
                position += data.shape[1]
            if frame is None:
                break
    return out


def _atempo(samples: np.ndarray, tempo: float) -> np.ndarray:
    """Change duration by 1/tempo keeping the pitch (ffmpeg's atempo)."""
    graph = av.filter.Graph()
    nodes = [graph.add_abuffer(format="fltp", sample_rate=AUDIO_SAMPLE_RATE, layout="stereo",
                               time_base=Fraction(1, AUDIO_SAMPLE_RATE))]
    while tempo < 0.5 or tempo > 2.0:  # keep each stage in atempo's most accurate range
        factor = 0.5 if tempo < 0.5 else 2.0
        nodes.append(graph.add("atempo", str(factor)))
        tempo /= factor
    nodes += [graph.add("atempo", f"{tempo:.9f}"),
              graph.add("aformat", "sample_fmts=fltp:channel_layouts=stereo"),
              graph.add("abuffersink")]
    for a, b in itertools.pairwise(nodes):
        a.link_to(b)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp",
                                       layout="stereo")
    frame.sample_rate, frame.pts = AUDIO_SAMPLE_RATE, 0
    frame.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
    graph.push(frame)
    graph.push(None)
    pieces = []
    while True:
        try:
            pieces.append(graph.pull().to_ndarray())
        except (av.BlockingIOError, av.EOFError):
            break
    return np.concatenate(pieces, axis=1) if pieces else np.zeros((AUDIO_CHANNELS, 0),
                                                                    np.float32)


def fit_audio(source: Path, dest: Path, window: Window, *, normalize: bool,
              preserve_pitch: bool, pad_front_seconds: float = 0.0) -> dict[str, object]:
    """Write the audio of `window` as 16-bit WAV at the model's rate, exactly as long
    as the fitted video; returns what the manifest records about it."""
    samples = _decode_audio(source, window.start, window.source_duration)
    if abs(window.stretch - 1) > 1e-6:
        if preserve_pitch:
            samples = _atempo(samples, 1 / window.stretch)
        else:  # play faster or slower, pitch and all
            length = round(samples.shape[1] * window.stretch)
            grid = np.linspace(0, samples.shape[1] - 1, max(length, 1))
            samples = np.stack([np.interp(grid, np.arange(samples.shape[1]), c)
                                for c in samples]).astype(np.float32)
    if pad_front_seconds:
        pad = np.zeros((AUDIO_CHANNELS, round(pad_front_seconds * AUDIO_SAMPLE_RATE)),
                       np.float32)
        samples = np.concatenate([pad, samples], axis=1)
    length = round((window.duration + pad_front_seconds) * AUDIO_SAMPLE_RATE)
    samples = np.pad(samples[:, :length], ((0, 0), (0, max(0, length - samples.shape[1]))))
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if normalize and peak > 1e-6:
        samples = samples * (PEAK_TARGET / peak)
    write_wav(dest, samples)
    return {"sampleRate": AUDIO_SAMPLE_RATE, "channels": AUDIO_CHANNELS,
            "samples": int(samples.shape[1]), "sourcePeak": round(peak, 6),
            "normalized": bool(normalize and peak > 1e-6),
            "stretched": abs(window.stretch - 1) > 1e-6}


def write_wav(dest: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(dest), "wb") as out:
        out.setnchannels(samples.shape[0])
        out.setsampwidth(2)
        out.setframerate(AUDIO_SAMPLE_RATE)
        out.writeframes(pcm.T.tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 in [-1, 1] and the sample rate."""
    with wave.open(str(path), "rb") as inp:
        raw = np.frombuffer(inp.readframes(inp.getnframes()), dtype="<i2")
        return (raw.reshape(-1, inp.getnchannels()).T.astype(np.float32) / 32767,
                inp.getframerate())
