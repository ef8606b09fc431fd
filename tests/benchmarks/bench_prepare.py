"""Dataset fitting speed and memory next to the ffmpeg command line.

Fits 10 clips of 10 s, 1080p30 with stereo audio, to medium 1:1 at 89 frames and
24 fps (the windows the prepare stage plans: two per clip, ending at the clip's end),
once with our code and once with `ffmpeg` doing the same decode, scale, crop and
encode (same filters, same x264 settings, audio resampled to 16 kHz WAV). Each side
runs in its own process so peak RSS is its own. Then the same with the sources stored
turned, as phones store portrait video (the same streams remuxed with a 90° display
matrix): ours turns them upright in its fitting graph, the ffmpeg command line with
the `transpose` filter it inserts itself. Then checks memory is flat in clip length:
the whole prepare stage (scene detection included) on a 30 s and a 120 s clip.

    python tests/benchmarks/bench_prepare.py [--clips 10] [--seconds 10]

Needs the `ffmpeg` binary (Debian: apt-get install ffmpeg).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from procstats import peak_rss

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
FRAMES, RATE, SIZE = 89, 24, (768, 768)


def make_sources(count: int, seconds: float) -> list[Path]:
    from ltx_trainer.sample_data import make_clip

    CACHE.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = CACHE / f"src-{seconds:g}s-{i}.mp4"
        if not path.exists():
            make_clip(path, seconds, fps=30, size=(1920, 1080), tone_hz=220.0 + 40 * i)
        paths.append(path)
    return paths


def turned(sources: list[Path]) -> list[Path]:
    """The same streams remuxed with a display matrix that turns them 90° clockwise."""
    import av

    paths = []
    for src in sources:
        path = src.with_name(src.stem + "-turned.mp4")
        if not path.exists():
            with av.open(str(src)) as inp, av.open(str(path), "w") as out:
                streams = {}
                for stream in inp.streams:
                    streams[stream.index] = out.add_stream_from_template(stream)
                    if stream.type == "video":
                        streams[stream.index].set_display_rotation(-90)  # counter-clockwise
                for packet in inp.demux():
                    if packet.dts is not None:
                        packet.stream = streams[packet.stream.index]
                        out.mux(packet)
        paths.append(path)
    return paths


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process.

    The peak is the child's own VmHWM, polled while it runs: rusage's ru_maxrss would
    include this (large) parent's RSS, which Linux carries across fork and exec.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, peak_rss(proc.pid))
        time.sleep(0.005)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, peak


def windows_for(path: Path) -> tuple[object, list[tuple[float, float]]]:
    """The clip's orientation and its planned windows (start, source duration)."""
    from ltx_trainer.dataset.media import probe
    from ltx_trainer.dataset.prepare import plan_windows

    info = probe(path)
    return info.orientation, [(w.start, w.source_duration)
                              for w in plan_windows(info.start, info.end, FRAMES, RATE, False, 4)]


def ours(sources: list[Path], out: Path) -> None:
    """Child process: fit every planned window with our fitting code."""
    from ltx_trainer.dataset.media import Window, fit_audio, fit_video

    for i, src in enumerate(sources):
        orientation, windows = windows_for(src)
        for j, (start, duration) in enumerate(windows):
            window = Window(start, duration, FRAMES, RATE)
            fit_video(src, out / f"{i}-{j}.mp4", window, SIZE, orientation)
            fit_audio(src, out / f"{i}-{j}.wav", window, normalize=True, preserve_pitch=True)


def ffmpeg_commands(sources: list[Path], out: Path) -> list[list[str]]:
    w, h = SIZE
    cmds = []
    for i, src in enumerate(sources):
        for j, (start, duration) in enumerate(windows_for(src)[1]):
            cmds.append([
                "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                "-ss", f"{start:.6f}", "-t", f"{duration:.6f}", "-i", str(src),
                "-map", "0:v", "-vf",
                f"scale=w={w}:h={h}:force_original_aspect_ratio=increase,crop={w}:{h},"
                f"fps={RATE},format=yuv420p",
                "-frames:v", str(FRAMES), "-c:v", "libx264", "-crf", "12", "-preset", "veryfast",
                str(out / f"{i}-{j}.mp4"),
                "-map", "0:a", "-ac", "2", "-ar", "16000", "-c:a", "pcm_s16le",
                str(out / f"{i}-{j}.wav"),
            ])
    return cmds


def prepare_one(clip: Path, work: Path) -> None:
    """Child process: the whole prepare stage on one clip, scene detection included."""
    from ltx_contract.spec import parse_spec
    from ltx_trainer.dataset import FetchPolicy, PrepareSettings, prepare_dataset

    archive = work / "clips.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.write(clip, clip.name)
    spec = parse_spec({"trainingDataUrl": archive.as_uri(), "withAudio": True,
                       "splitInputDurationThreshold": 5.0})
    prepare_dataset(spec, work / "work", PrepareSettings(fetch=FetchPolicy(allow_file_urls=True)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, out, *paths = args.child
        if kind == "ours":
            ours([Path(p) for p in paths], Path(out))
        else:
            prepare_one(Path(paths[0]), Path(out))
        return
    if not shutil.which("ffmpeg"):
        raise SystemExit("ffmpeg not found: install it (Debian: apt-get install ffmpeg)")

    t = time.perf_counter()
    sources = make_sources(args.clips, args.seconds)
    print(f"sources ready in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    results: dict[str, object] = {"clips": args.clips, "seconds": args.seconds,
                                  "cpus": os.cpu_count()}
    for label, clips in (("upright", sources), ("turned", turned(sources))):
        runs: dict[str, object] = {}
        for side in ("ffmpeg", "ours"):
            out = CACHE / f"out-{side}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            if side == "ours":
                wall, peak = run_measured([sys.executable, __file__, "--child", "ours",
                                           str(out), *map(str, clips)])
            else:
                wall, peak = 0.0, 0
                for cmd in ffmpeg_commands(clips, out):
                    w, p = run_measured(cmd)
                    wall, peak = wall + w, max(peak, p)
            runs[side] = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20, 1),
                          "outputs": len(list(out.glob("*.mp4")))}
        runs["ratio"] = round(runs["ours"]["wall_s"] / runs["ffmpeg"]["wall_s"], 2)
        results[label] = runs

    memory = {}
    for seconds in (30.0, 120.0):  # both hold the 4-window cap: only the length differs
        [clip] = make_sources(1, seconds)
        work = CACHE / f"prepare-{seconds:g}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        wall, peak = run_measured([sys.executable, __file__, "--child", "prepare", str(work),
                                   str(clip)])
        memory[f"{seconds:g}s"] = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20, 1)}
    results["prepare_memory_by_clip_length"] = memory
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
