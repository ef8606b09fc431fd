"""Waveform → log-mel spectrogram, the audio VAE's input.

Slaney-scale mel filters (transformers' audio utilities), magnitude STFT with a
Hann window of n_fft samples, log with a 1e-5 floor, as the LTX-2 trainer does.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ltx_contract.suffix import STFT_WINDOW

#: the STFT window: one definition with the suffix rule's closing audio window
N_FFT = STFT_WINDOW


@functools.cache
def _filters(sample_rate: int, mel_bins: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=mel_bins,
                           min_frequency=0.0, max_frequency=sample_rate / 2,
                           sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.asarray(bank, dtype=np.float32)).T  # (mel, freq)


def log_mel(waveform: torch.Tensor, sample_rate: int, hop_length: int, mel_bins: int
            ) -> torch.Tensor:
    """(channels, samples) → (1, channels, frames, mel_bins) float32, on the waveform's
    device."""
    device = waveform.device
    spec = torch.stft(waveform.float(), n_fft=N_FFT, hop_length=hop_length, win_length=N_FFT,
                      window=torch.hann_window(N_FFT, device=device), center=True,
                      return_complex=True).abs()
    mel = torch.matmul(_filters(sample_rate, mel_bins).to(device), spec)  # (channels, mel, frames)
    return torch.log(mel.clamp(min=1e-5)).transpose(1, 2).unsqueeze(0)
