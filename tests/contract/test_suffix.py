"""Suffix carving: one definition of the clean suffix and its closing audio window."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLLTX2Video

from ltx_contract.suffix import SuffixWindow, audio_latent_frames, latent_frames


@pytest.mark.parametrize(("frames", "cf", "first", "latents", "first_latent"), [
    (9, 8, 1, 2, 1), (25, 8, 17, 4, 3), (89, 8, 81, 12, 11), (89, 24, 65, 12, 9),
    (121, 112, 9, 16, 2),
])
def test_suffix_frames_and_latents(frames, cf, first, latents, first_latent):
    window = SuffixWindow(frames, 24, cf)
    assert window.first_suffix_frame == first
    assert window.latent_frames == latent_frames(frames) == latents
    assert window.first_suffix_latent == first_latent
    assert window.suffix_latent_frames == cf // 8


def test_closing_audio_window_matches_the_suffix_seconds():
    window = SuffixWindow(89, 24, 8)
    assert window.closing_audio_window == pytest.approx((81 / 24, 89 / 24))
    assert window.audio_latent_frames == audio_latent_frames(89, 24) == round(89 / 24 * 25)
    # 81/24 s = 84.375 audio latents in; latent 85's first mel frame (337) is centred 5 ms
    # before the suffix and its window reaches 37 ms into the lead-in: the first latent
    # wholly inside is 86
    assert window.first_suffix_audio_latent == 86


@pytest.mark.parametrize(("frames", "fps", "cf"), [
    (89, 24, 8), (89, 24, 24), (121, 24, 8), (121, 60, 8), (97, 30, 16), (25, 24, 8),
    (49, 25, 16), (9, 8, 8)])
def test_no_conditioned_audio_latent_hears_the_lead_in(frames, fps, cf):
    """Against the log-mel the audio VAE takes (centred 64 ms STFT windows every 10 ms,
    4 mel frames per latent): changing every lead-in sample changes none of the mel frames
    of the conditioned latents, and does change the latent just before them."""
    from ltx_trainer.codec.audio import log_mel

    window = SuffixWindow(frames, fps, cf)
    # the lead-in: every sample before the first suffix frame's time
    start = -(-window.first_suffix_frame * 16_000 // fps)
    samples = round(window.duration * 16_000)
    waveform = torch.randn(1, samples, generator=torch.Generator().manual_seed(0))
    changed = waveform.clone()
    changed[:, :start] = torch.randn(1, start, generator=torch.Generator().manual_seed(1))
    a, b = (log_mel(w, 16_000, 160, 64)[0, 0] for w in (waveform, changed))
    differs = (a - b).abs().amax(dim=1) > 0  # per mel frame

    def heard(latent):  # the latent's own mel frames: 0 for latent 0, else 4j-3 … 4j
        return differs[max(0, 4 * latent - 3):4 * latent + 1].any().item()

    first = window.first_suffix_audio_latent
    assert first < window.audio_latent_frames
    assert not any(heard(j) for j in range(first, window.audio_latent_frames))
    assert heard(first - 1)  # the window starts at the first latent wholly inside


@pytest.mark.parametrize(("frames", "cf"), [(24, 8), (25, 12), (25, 32), (17, 0)])
def test_invalid_windows(frames, cf):
    with pytest.raises(ValueError):
        SuffixWindow(frames, 24, cf)


def test_suffix_latents_hold_exactly_the_suffix_frames():
    """Against the diffusers LTX-2 video VAE (causal, 8× in time): changing the first
    suffix frame changes no lead-in latent, changing the last lead-in frame changes
    the last lead-in latent."""
    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(
        block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        latent_channels=8).eval()
    window = SuffixWindow(25, 24, 8)
    video = torch.randn(1, 3, window.frames, 64, 64)

    def changed_latents(frame: int) -> list[int]:
        edited = video.clone()
        edited[:, :, frame] += 1.0
        with torch.no_grad():
            a = vae.encode(video).latent_dist.mean
            b = vae.encode(edited).latent_dist.mean
        assert a.shape[2] == window.latent_frames
        return [i for i in range(a.shape[2]) if (a[:, :, i] - b[:, :, i]).abs().max() > 1e-6]

    assert changed_latents(window.first_suffix_frame) == list(
        range(window.first_suffix_latent, window.latent_frames))
    assert min(changed_latents(window.first_suffix_frame - 1)) == window.first_suffix_latent - 1
