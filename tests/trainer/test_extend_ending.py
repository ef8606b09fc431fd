"""The extended clip ends with the user's own frames and audio: the generated lead-in,
then the fitted closing clip itself (not its VAE reconstruction), cut on the first
suffix frame and its audio sample, with no gap or click at the seam."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from ltx_contract.spec import frame_size
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.codec.text import encode_texts, text_key
from ltx_trainer.dataset.media import probe
from ltx_trainer.dataset.prepare import fit_closing_clip
from ltx_trainer.model.loader import load_component, read_profile
from ltx_trainer.preview.ending import (
    OUTPUT_AUDIO_RATE,
    FittedClip,
    audio_samples,
    resample,
    splice,
    splice_audio,
    write_extension,
)
from ltx_trainer.preview.run import reel_part
from ltx_trainer.preview.sampler import Extension, Models, extend_backward

from harness.media_factory import make_clip, psnr, read_frames

FRAMES, FPS, CF = 17, 24, 8
SUFFIX = SuffixWindow(FRAMES, FPS, CF)
COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "scheduler")
PROMPT = "a square glides in"
CPU = torch.device("cpu")


def decode(path) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames, and the audio as (2, samples) with its rate."""
    frames = read_frames(path)
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    return frames, np.concatenate(chunks, axis=1), rate


@pytest.fixture(scope="module")
def extended(tiny_model, tmp_path_factory):
    """A clip with a tone, fitted as `extend` fits it, extended by the tiny model."""
    root = tmp_path_factory.mktemp("ending")
    clip = make_clip(root / "closing.mp4", 1.0, fps=FPS, size=(160, 96), tone_hz=330)
    video, wav = root / "fitted.mp4", root / "fitted.wav"
    fit_closing_clip(clip, probe(clip), FRAMES, FPS, frame_size("low", "16:9"), video, wav,
                     normalize=True, preserve_pitch=True)
    fitted = FittedClip.read(video, wav)
    models = Models(*(load_component(tiny_model, n, CPU) for n in COMPONENTS))
    texts = encode_texts(tiny_model, [PROMPT, ""], CPU, 32)
    result = extend_backward(models, read_profile(tiny_model), fitted.pixels(),
                             fitted.waveform(), texts[text_key(PROMPT)], texts[text_key("")],
                             suffix=SUFFIX, with_audio=True, steps=2, seed=0,
                             max_sequence_length=32)
    return fitted, result, root


def test_the_output_ends_with_the_fitted_frames_and_starts_with_the_models(extended):
    fitted, result, root = extended
    cut = SUFFIX.first_suffix_frame
    real = write_extension(result, fitted, SUFFIX, root / "real.mp4")
    decoded = write_extension(result, fitted, SUFFIX, root / "decoded.mp4", decoded_ending=True)
    out, _, _ = decode(real)
    assert out.shape == fitted.frames.shape  # every frame of the window, none more
    # the last conditioningFrames frames are the user's own, through one H.264 round trip
    for i in range(cut, FRAMES):
        assert psnr(out[i], fitted.frames[i]) >= 35, i
    # the lead-in is the model's: exactly its frames before encoding, and in the file
    # nearer to them than to the clip's (the tiny model's frames are noise, which H.264
    # keeps less faithfully than real footage)
    spliced = splice(result, fitted, SUFFIX)
    assert np.array_equal(spliced.frames[:cut], result.frames[:cut])
    assert np.array_equal(spliced.frames[cut:], fitted.frames[cut:])
    for i in range(cut):
        assert psnr(out[i], result.frames[i]) > psnr(out[i], fitted.frames[i]) + 3, i
    # --decoded-ending keeps the model's reconstruction, which is not the user's frames
    model_ending, _, _ = decode(decoded)
    for i in range(cut, FRAMES):
        assert psnr(model_ending[i], fitted.frames[i]) < 30, i
        assert psnr(model_ending[i], result.frames[i]) > psnr(model_ending[i],
                                                              fitted.frames[i]) + 3, i


def test_the_closing_audio_is_the_users_from_the_seam_on(extended):
    fitted, result, root = extended
    spliced = splice(result, fitted, SUFFIX)
    total, seam = audio_samples(FRAMES, FPS), audio_samples(SUFFIX.first_suffix_frame, FPS)
    assert spliced.sample_rate == OUTPUT_AUDIO_RATE and spliced.seam_sample == seam
    assert spliced.audio.shape == (2, total)  # exactly the clip's duration: no gap, no tail
    own = resample(fitted.audio, fitted.sample_rate, OUTPUT_AUDIO_RATE, total)
    model = resample(result.audio, result.sample_rate, OUTPUT_AUDIO_RATE, total)
    assert np.array_equal(spliced.audio[:, seam:], own[:, seam:])  # sample-exact
    fade = round(0.01 * OUTPUT_AUDIO_RATE)
    assert np.array_equal(spliced.audio[:, :seam - fade], model[:, :seam - fade])
    assert not np.allclose(own[:, seam:], model[:, seam:], atol=0.05)  # two different sources
    # through AAC: the closing part of the file still follows the user's tone
    _, audio, rate = decode(write_extension(result, fitted, SUFFIX, root / "with-audio.mp4"))
    assert rate == OUTPUT_AUDIO_RATE
    assert abs(audio.shape[1] - total) <= 2048  # AAC pads its last frame at most
    window = slice(seam + 480, total - 480)
    correlation = np.corrcoef(audio[0, window], own[0, window])[0, 1]
    assert correlation > 0.95
    # the resampler is FFmpeg's, band-limited and without delay: a 330 Hz tone stays put
    t = np.arange(16_000) / 16_000
    tone = np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2).astype(np.float32)
    up = resample(tone, 16_000, OUTPUT_AUDIO_RATE, OUTPUT_AUDIO_RATE)
    expected = 0.3 * np.sin(2 * np.pi * 330 * np.arange(OUTPUT_AUDIO_RATE) / OUTPUT_AUDIO_RATE)
    assert np.abs(up[0, 1000:-1000] - expected[1000:-1000]).max() < 1e-3


def test_the_seam_steps_no_more_than_its_sources():
    """Two sources that disagree (a low hum against a tone): a hard cut would jump by
    their difference; the crossfade keeps every step within the sources' own."""
    rate, seam, fade = OUTPUT_AUDIO_RATE, 24_000, 480
    t = np.arange(2 * seam) / rate
    lead_in = np.stack([0.6 + 0.05 * np.sin(2 * np.pi * 50 * t)] * 2).astype(np.float32)
    closing = np.stack([-0.3 * np.sin(2 * np.pi * 330 * t)] * 2).astype(np.float32)
    out = splice_audio(lead_in, closing, seam, fade)
    around = slice(seam - fade - 100, seam + 100)
    own_steps = max(np.abs(np.diff(lead_in[0, around])).max(),
                    np.abs(np.diff(closing[0, around])).max())
    spread = np.abs(lead_in[0, around] - closing[0, around]).max() / fade
    steps = np.abs(np.diff(out[0, around]))
    assert steps.max() <= own_steps + spread + 1e-6
    hard_cut = abs(closing[0, seam] - lead_in[0, seam - 1])
    assert hard_cut > 10 * steps.max()  # what the crossfade avoids
    assert np.array_equal(out[:, seam:], closing[:, seam:])
    assert np.array_equal(out[:, :seam - fade], lead_in[:, :seam - fade])


def test_the_reel_parts_are_the_splice_cut_at_the_seam(extended):
    fitted, result, _ = extended
    spliced = splice(result, fitted, SUFFIX)
    part = reel_part(spliced, PROMPT)
    cut, seam = SUFFIX.first_suffix_frame, spliced.seam_sample
    assert np.array_equal(part.closing, fitted.frames[cut:])  # the real closing clip
    assert np.array_equal(part.lead_in, result.frames[:cut])  # the generated lead-in
    assert np.array_equal(np.concatenate([part.lead_in_audio, part.closing_audio], axis=1),
                          spliced.audio)
    assert part.lead_in_audio.shape[1] == seam
    assert part.lead_in_rate == part.closing_rate == OUTPUT_AUDIO_RATE


def test_a_silent_extension_splices_frames_only(extended):
    fitted, result, _ = extended
    silent = Extension(result.frames, None, None)
    spliced = splice(silent, FittedClip(fitted.frames), SUFFIX)
    assert spliced.audio is None and spliced.seam_sample is None
    assert np.array_equal(spliced.frames[SUFFIX.first_suffix_frame:],
                          fitted.frames[SUFFIX.first_suffix_frame:])
    with pytest.raises(ValueError, match="the extension has 17 frames and the fitted clip 9"):
        splice(silent, FittedClip(fitted.frames[:9]), SUFFIX)
