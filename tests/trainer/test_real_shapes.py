"""Training and sampling at LTX-2.3's and LTX-2.5's real widths (one block / layer per
stack, random weights): a few training steps, the LoRA reloaded through diffusers' own LTX-2
loader, and a few sampler steps with CFG, STG and modality guidance on it, in each layout.
LTX-2.5 runs once, video only, from its split pack (its folder equals the pack component by
component: `test_ltx25.py`).

Both layouts load the same weights (component by component equality is
`test_single_file.py`'s), so the two runs split the cases: the diffusers folder trains
video only, the official single file trains with audio (its mapped audio VAE and
vocoder then decode the result). Token counts are the smallest the suffix allows (three
latent frames of 2×2): what is real is every width, head and channel."""

from __future__ import annotations

import gc
import math
from pathlib import Path

import pytest
import torch
from conftest import RealShapeModels
from safetensors.torch import load_file

from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.codec.text import encode_texts, text_key
from ltx_trainer.model.device import compute_dtype
from ltx_trainer.model.loader import load_component
from ltx_trainer.model.source import resolve_model
from ltx_trainer.preview.sampler import Models, extend_backward
from ltx_trainer.training.trainer import Trainer, TrainSettings, step_generator

CPU = torch.device("cpu")
FRAMES, FPS, SIZE = 17, 24, 64  # 3 latent frames of 2×2; the suffix keeps the last 8 frames
SETTINGS = TrainSettings(max_sequence_length=128, seed=0)
PROMPT, NEGATIVE = "a square glides in", "blurry"


@pytest.fixture(scope="module", params=[("diffusers", False), ("single-file", True),
                                        ("split", False)],
                ids=["diffusers-video", "single-file-audio", "ltx-2.5-split-video"])
def case(request) -> tuple[object, bool]:
    layout, with_audio = request.param
    if layout == "split":
        return resolve_model(request.getfixturevalue("real_shape_pack_v25")), with_audio
    real_shape_models: RealShapeModels = request.getfixturevalue("real_shape_models")
    if layout == "diffusers":
        return resolve_model(real_shape_models.diffusers), with_audio
    return resolve_model(real_shape_models.checkpoint, text_encoder=real_shape_models.gemma), \
        with_audio


def _spec(with_audio: bool):
    return parse_spec({"trainingDataUrl": "https://example.com/clips.zip", "numberOfSteps": 100,
                       "numberOfFrames": FRAMES, "rank": 8, "learningRate": 1e-2,
                       "withAudio": with_audio})


@pytest.mark.timeout(1500)  # with the session's 7 GB real-shape models written first
def test_train_reload_and_sample_at_real_shapes(case, tmp_path: Path) -> None:
    model, with_audio = case
    texts = encode_texts(model, [PROMPT, NEGATIVE], CPU, SETTINGS.max_sequence_length)
    assert texts[text_key(PROMPT)].shape[-1] == 3840 * 2  # Gemma's 3,840 × its 2 states
    suffix = SuffixWindow(FRAMES, FPS, 8)
    generator = torch.Generator().manual_seed(0)
    sample = {"video": torch.randn(128, 3, 2, 2, generator=generator),  # 128 latent channels
              "text": texts[text_key(PROMPT)]}

    trainer = Trainer(_spec(with_audio), model, tmp_path, CPU, SETTINGS)
    assert trainer.profile.version == getattr(model, "version", "2.3")
    assert trainer.profile.use_cross_timestep
    trainer._load()
    audio_channels = trainer.transformer.config.audio_in_channels
    sample["audio"] = torch.randn(suffix.audio_latent_frames, audio_channels,
                                  generator=generator)
    losses = []
    for step in range(2):
        inputs = trainer.prepare(sample, suffix, step_generator(SETTINGS.seed, step))
        step_losses, norm = trainer.backward(inputs, sample["text"])
        assert set(step_losses) >= {"total", "video"} | ({"audio"} if with_audio else set())
        assert math.isfinite(step_losses["total"].item()) and norm.item() > 0
        trainer.optimizer_step()
        losses.append(step_losses["total"].item())
    result = trainer._write_outputs(2, losses)
    from ltx_trainer.model.lora import lora_version

    assert lora_version(result.lora_file) == trainer.profile.name  # the version it is for
    trainer.release()
    del trainer
    gc.collect()

    saved = load_file(result.lora_file)
    attentions = {k.split(".")[3] for k in saved}
    assert attentions == ({"attn1", "attn2", "audio_attn1", "audio_attn2",
                           "audio_to_video_attn", "video_to_audio_attn"} if with_audio
                          else {"attn1", "attn2"})
    assert all(v.abs().max() > 0 for k, v in saved.items() if "lora_B" in k)
    lora_a = next(v for k, v in saved.items() if k.endswith("attn1.to_q.lora_A.weight"))
    assert lora_a.shape == (8, 4096)  # the real video width

    _sample_with_the_reloaded_lora(model, result.lora_file, texts, suffix, with_audio)


def _sample_with_the_reloaded_lora(model: object, lora_file: Path, texts: dict,
                                   suffix: SuffixWindow, with_audio: bool) -> None:
    from diffusers import LTX2Pipeline

    from ltx_trainer.model.loader import read_profile

    profile = read_profile(model)
    dtype = compute_dtype(CPU)  # fp32: bf16 matmuls on a CPU without bf16 units crawl
    transformer = load_component(model, "transformer", CPU, dtype)
    models = Models(transformer=transformer,
                    connectors=load_component(model, "connectors", CPU, dtype),
                    vae=load_component(model, "vae", CPU, dtype),
                    audio_vae=load_component(model, "audio_vae", CPU, dtype) if with_audio
                    else None,
                    vocoder=load_component(model, "vocoder", CPU, dtype) if with_audio else None,
                    scheduler=load_component(model, "scheduler", CPU))
    generator = torch.Generator().manual_seed(1)
    closing = torch.rand(1, 3, FRAMES, SIZE, SIZE, generator=generator) * 2 - 1
    audio_rate = models.audio_vae.config.sample_rate if with_audio else 16000
    audio = torch.rand(2, FRAMES * audio_rate // FPS, generator=generator) - 0.5 \
        if with_audio else None
    calls = []
    transformer.register_forward_hook(lambda *_: calls.append(1))

    def run() -> object:
        return extend_backward(models, profile, closing, audio, texts[text_key(PROMPT)],
                               texts[text_key(NEGATIVE)], suffix=suffix,
                               with_audio=with_audio, steps=2, stg_scale=1.0, seed=3,
                               max_sequence_length=SETTINGS.max_sequence_length)

    base = run()
    # per step: the CFG pair, STG, and with audio the modality-isolated pass
    assert len(calls) == 2 * (3 if with_audio else 2)
    assert base.frames.shape == (FRAMES, SIZE, SIZE, 3)
    if with_audio:
        assert base.audio.shape[0] == 2 and base.sample_rate == 48000  # the BWE vocoder
    # the LoRA through diffusers' own LTX-2 loader: every tensor finds its module
    converted = LTX2Pipeline.lora_state_dict(str(lora_file))
    transformer.load_lora_adapter(converted, prefix="transformer", adapter_name="extend")
    with_lora = run()
    assert (with_lora.latents - base.latents).abs().max() > 1e-3
