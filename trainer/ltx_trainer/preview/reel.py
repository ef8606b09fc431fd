"""The validation reel: for each sample, the generated lead-in then the real closing
clip, each part labelled, with audio when the training had it; H.264 + AAC so that
browsers and players open it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

REEL_AUDIO_RATE = 48_000
_LAYOUTS = {1: "mono", 2: "stereo"}


@dataclass
class ReelPart:
    lead_in: np.ndarray  # (frames, h, w, 3) generated
    closing: np.ndarray  # (frames, h, w, 3) real
    prompt: str
    lead_in_audio: np.ndarray | None = None  # (channels, samples) at lead_in_rate
    lead_in_rate: int | None = None
    closing_audio: np.ndarray | None = None
    closing_rate: int | None = None


def label(frames: np.ndarray, text: str) -> np.ndarray:
    """Burn a caption band into the top of every frame."""
    height, width = frames.shape[1:3]
    size = max(10, height // 24)
    font = ImageFont.load_default(size=size)
    band = size + size // 2
    out = frames.copy()
    for i, frame in enumerate(out):
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, width, band), fill=(0, 0, 0))
        draw.text((size // 2, size // 4), text, fill=(255, 255, 255), font=font)
        out[i] = np.asarray(image)
    return out


def resample(audio: np.ndarray, rate: int, out_rate: int, length: int) -> np.ndarray:
    """(channels, samples) at `rate` → stereo (2, `length`) float32 at `out_rate`, with
    FFmpeg's resampler (band-limited, aligned: no delay); cut, or padded with silence at
    the end."""
    audio = np.ascontiguousarray(audio[:2], dtype=np.float32)
    if audio.shape[1] == 0:
        return np.zeros((2, length), np.float32)
    if rate == out_rate:
        out = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio
    else:
        frame = av.AudioFrame.from_ndarray(audio, format="fltp",
                                           layout=_LAYOUTS[audio.shape[0]])
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=out_rate)
        out = np.concatenate([f.to_ndarray() for f in
                              resampler.resample(frame) + resampler.resample(None)], axis=1)
    out = out[:, :length]
    return np.pad(out, ((0, 0), (0, length - out.shape[1]))).astype(np.float32)


def write_video(frames: np.ndarray, fps: int, dest: Path, audio: np.ndarray | None = None,
                sample_rate: int | None = None) -> Path:
    """H.264 (+ AAC when `audio` is given) that browsers and players open; written to a
    side file and moved into place whole."""
    partial = dest.with_name(dest.name + ".part.mp4")
    try:
        _encode(frames, fps, partial, audio, sample_rate)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(dest)
    return dest


def _encode(frames: np.ndarray, fps: int, path: Path, audio: np.ndarray | None,
            sample_rate: int | None) -> None:
    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        # every stream is added before the first packet is muxed
        stream = out.add_stream("aac", rate=REEL_AUDIO_RATE, layout="stereo") \
            if audio is not None else None
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if stream is not None:
            track = resample(audio, sample_rate, REEL_AUDIO_RATE,
                             round(len(frames) / fps * REEL_AUDIO_RATE))
            for start in range(0, track.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(track[:, start:start + 1024]), format="fltp",
                    layout="stereo")
                chunk.sample_rate, chunk.pts = REEL_AUDIO_RATE, start
                chunk.time_base = Fraction(1, REEL_AUDIO_RATE)
                for packet in stream.encode(chunk):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)


def write_reel(parts: list[ReelPart], dest: Path, fps: int) -> Path:
    """Write the reel; every part is at `fps` and the same size."""
    frames, tracks = [], []
    with_audio = all(p.lead_in_audio is not None for p in parts)
    for part in parts:
        frames += [label(part.lead_in, f"GENERATED lead-in: {part.prompt}"[:90]),
                   label(part.closing, "REAL closing clip")]
        if with_audio:
            tracks += [resample(a, r, REEL_AUDIO_RATE, round(len(c) / fps * REEL_AUDIO_RATE))
                       for a, r, c in ((part.lead_in_audio, part.lead_in_rate, part.lead_in),
                                       (part.closing_audio, part.closing_rate, part.closing))]
    audio = np.concatenate(tracks, axis=1) if with_audio else None
    return write_video(np.concatenate(frames), fps, dest, audio, REEL_AUDIO_RATE)
