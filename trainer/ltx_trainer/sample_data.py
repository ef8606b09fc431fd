"""A small sample dataset the project makes itself: real video files with moving
content, captions and in-sync audio, for the quick start and the tests.

Clips are made with PyAV: a soft gradient with a square gliding across, hard scene
cuts with unmistakable colour changes, a sine tone, and optionally a sync marker (a
white flash on screen at the same instant as a click on the audio).
"""

from __future__ import annotations

import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 48_000
#: Scene colours far apart in hue, brightness and saturation, so cuts are unmistakable.
PALETTE = [(20, 30, 200), (230, 200, 40), (200, 40, 160), (40, 200, 70), (250, 250, 250)]


def make_clip(
    path: Path,
    seconds: float,
    fps: float | Fraction = 24,
    size: tuple[int, int] = (160, 96),
    audio: bool = True,
    tone_hz: float = 440.0,
    cuts: tuple[float, ...] = (),
    flash_at: float | None = None,
    codec: str | None = None,
) -> Path:
    """Write a clip; `cuts` are times of hard scene changes (new colours and motion)."""
    rate = Fraction(fps).limit_denominator(1001)
    width, height = size
    frames = round(seconds * rate)
    codec = codec or ("mpeg4" if path.suffix.lower() == ".avi" else "libx264")
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=rate)
        # 4:2:0 needs even sizes; odd-sized clips are written 4:4:4, as cameras do
        odd = width % 2 or height % 2
        video.width, video.height = width, height
        video.pix_fmt = "yuv444p" if odd else "yuv420p"
        if codec == "libx264":
            video.options = {"preset": "ultrafast", "crf": "18"}
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        xs = np.arange(width)[None, :]
        for i in range(frames):
            t = i / rate
            scene = sum(1 for c in cuts if t >= c)
            base = np.array(PALETTE[scene % len(PALETTE)], np.uint8)
            # a soft gradient with a square gliding across: motion without busy texture
            shade = (base * (0.6 + 0.4 * xs[..., None] / width)).astype(np.uint8)
            img = np.repeat(shade, height, axis=0)
            side = max(4, height // 4)
            x0 = int((float(t) * 30 * (scene + 1)) % max(1, width - side))
            y0 = (height - side) // 2
            img[y0:y0 + side, x0:x0 + side] = 255 - base
            if flash_at is not None and abs(float(t) - flash_at) < 0.5 / float(rate):
                img[:] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            total = round(seconds * AUDIO_RATE)
            t = np.arange(total) / AUDIO_RATE
            wave = 0.3 * np.sin(2 * np.pi * tone_hz * t).astype(np.float32)
            if flash_at is not None:
                wave[:] = 0
                at = round(flash_at * AUDIO_RATE)
                wave[at:at + 240] = 0.9  # a 5 ms click
            stereo = np.stack([wave, wave]).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(stereo[:, start:start + 1024]), format="fltp",
                    layout="stereo")
                chunk.sample_rate, chunk.pts = AUDIO_RATE, start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return path


SAMPLE_CAPTIONS = [
    "a blue square glides across a soft gradient",
    "a bright square drifts to the right, then the scene cuts",
    "a square slides past as the tone holds steady",
    "the frame fills with colour as a square moves through",
    "a small square crosses the screen at an even pace",
    "a square enters from the left and keeps moving",
]


def write_sample_dataset(dest: Path, clips: int = 6, seconds: float = 2.5,
                         size: tuple[int, int] = (320, 180)) -> Path:
    """Write `dest/sample-clips.zip`: captioned clips with audio, one in a subfolder and
    one with a scene cut; returns the archive's path."""
    dest.mkdir(parents=True, exist_ok=True)
    archive_path = dest / "sample-clips.zip"
    partial = archive_path.with_name(archive_path.name + ".part")
    with zipfile.ZipFile(partial, "w") as archive:
        for index in range(clips):
            folder = "more/" if index == clips - 1 else ""
            name = f"{folder}clip{index:02d}"
            clip = make_clip(dest / f"clip{index:02d}.mp4", seconds,
                             fps=(24, 25, 30)[index % 3], size=size,
                             tone_hz=220.0 * (1 + index % 4),
                             cuts=(seconds / 2,) if index == 1 else ())
            archive.write(clip, f"{name}.mp4")
            archive.writestr(f"{name}.txt", SAMPLE_CAPTIONS[index % len(SAMPLE_CAPTIONS)])
            clip.unlink()
    partial.replace(archive_path)
    return archive_path


def write_closing_clip(dest: Path, seconds: float = 1.5, size: tuple[int, int] = (320, 180)
                       ) -> Path:
    """A closing clip for validation previews (its last frames are the suffix)."""
    dest.mkdir(parents=True, exist_ok=True)
    return make_clip(dest / "closing.mp4", seconds, fps=24, size=size, tone_hz=330.0)
