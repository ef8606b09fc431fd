"""Device consistency: every tensor of a training step and of a sampler step lives on the
model's device.

Without a GPU, the model and its inputs go to PyTorch's `meta` device, which refuses a
CPU tensor mixed into an operation exactly as CUDA does (a 0-dim scalar aside) — so a
CPU-made mask, timestep or noise tensor left behind fails here as it would on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.model.loader import load_component, read_profile
from ltx_trainer.preview.sampler import denoise, initial_streams, prompt_context, sigma_schedule
from ltx_trainer.training.trainer import Trainer, TrainSettings, step_generator

META = torch.device("meta")
SUFFIX = SuffixWindow(25, 24, 8)


def cpu_sample(suffix: SuffixWindow) -> dict[str, torch.Tensor]:
    """A cached sample as the cache gives it: CPU tensors (3 × 5 latent pixels, the tiny
    Gemma's 3 stacked layers of 32 features per token)."""
    return {"video": torch.randn(8, suffix.latent_frames, 3, 5),
            "audio": torch.randn(suffix.audio_latent_frames, 8),
            "text": torch.randn(5, 32 * 3).to(torch.bfloat16)}


@pytest.fixture(params=["2.0", "2.3"])
def model(request):
    return request.getfixturevalue("tiny_model" if request.param == "2.0" else "tiny_model_v23")


@pytest.mark.parametrize("with_audio", [True, False])
def test_a_training_step_runs_on_the_model_device(model, tmp_path, with_audio):
    spec = parse_spec({"trainingDataUrl": "s3://bucket/data.zip", "numberOfFrames": 25,
                       "resolution": "low", "aspectRatio": "16:9", "withAudio": with_audio})
    trainer = Trainer(spec, model, tmp_path, META, TrainSettings(max_sequence_length=16))
    trainer._load()
    assert {p.device.type for p in trainer.transformer.parameters()} == {"meta"}
    sample = cpu_sample(SUFFIX)
    inputs = trainer.prepare(sample, SUFFIX, step_generator(0, 0))
    losses, norm = trainer.backward(inputs, sample["text"])
    trainer.optimizer_step()
    assert losses["total"].device == META and norm.device == META
    assert ("audio" in losses) is with_audio


@pytest.mark.parametrize("with_audio", [True, False])
def test_a_sampler_step_runs_on_the_model_device(model, with_audio):
    profile = read_profile(model)
    transformer = load_component(model, "transformer", META)
    connectors = load_component(model, "connectors", META)
    scheduler = load_component(model, "scheduler", META)
    latents = torch.randn(1, 8, SUFFIX.latent_frames, 3, 5)  # what the VAE gives, on the CPU
    audio = torch.randn(SUFFIX.audio_latent_frames, 8) if with_audio else None
    video_stream, audio_stream, geometry = initial_streams(
        latents, audio, SUFFIX, 8, torch.Generator().manual_seed(0), META)
    text = prompt_context(connectors, torch.randn(4, 96), torch.randn(2, 96), 16)
    sigmas = sigma_schedule(scheduler, 2, geometry.video_tokens, profile)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    video, audio = denoise(transformer, profile, video_stream, audio_stream, text, geometry,
                           sigmas, with_audio=with_audio, stg_scale=1.0)
    assert video.latents.device == META and audio.latents.device == META
