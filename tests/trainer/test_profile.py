"""One model profile, read from the configs once and used by every transformer call."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.codec.text import encode_texts, text_key
from ltx_trainer.model.loader import load_component, read_profile
from ltx_trainer.preview.sampler import Models, extend_backward
from ltx_trainer.training.trainer import Trainer, TrainSettings, step_generator

CPU = torch.device("cpu")
SUFFIX = SuffixWindow(25, 24, 8)
COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "scheduler")


TINY = {"2.0": "tiny_model", "2.3": "tiny_model_v23", "2.5": "tiny_model_v25"}


@pytest.fixture(params=sorted(TINY))
def model(request):
    return request.getfixturevalue(TINY[request.param])


def record_forwards(transformer) -> tuple[list[dict], object]:
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({k: kwargs.get(k) for k in ("use_cross_timestep", "sigma", "audio_sigma",
                                                 "isolate_modalities",
                                                 "spatio_temporal_guidance_blocks",
                                                 "video_keyframes_mask", "hidden_states",
                                                 "height", "width")})

    return calls, transformer.register_forward_pre_hook(hook, with_kwargs=True)


def test_the_version_is_read_from_the_configs(tiny_model, tiny_model_v23, tiny_model_v25,
                                              tmp_path):
    old, new, v25 = (read_profile(m) for m in (tiny_model, tiny_model_v23, tiny_model_v25))
    assert (old.version, old.use_cross_timestep, old.prompt_modulation,
            old.per_modality_connectors, old.vocoder_class) == (
        "2.0", False, False, False, "LTX2Vocoder")
    assert (new.version, new.use_cross_timestep, new.prompt_modulation,
            new.per_modality_connectors, new.vocoder_class) == (
        "2.3", True, True, True, "LTX2VocoderWithBWE")
    # a 2.3 transformer with 2.0 connectors cannot work: refused by name
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_model_v23, mixed, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copy(tiny_model / "connectors" / "config.json", mixed / "connectors" / "config.json")
    with pytest.raises(ValueError, match=r"different versions.*per_modality_projections"):
        read_profile(mixed)
    # 2.5: 2.3's call, Gemma 4 for the prompt, both video decoders
    assert (v25.version, v25.name, v25.use_cross_timestep, v25.per_modality_connectors,
            v25.text_encoder, v25.decoders) == (
        "2.5", "ltx-2.5", True, True, "gemma4_unified", ("convolutional", "diffusion"))
    # only 2.5 has the keyframe embedding that ltx-core's inference puts on latent frame 0
    assert (old.first_frame_marker, new.first_frame_marker, v25.first_frame_marker) == (
        False, False, True)
    assert (old.decoders, new.text_encoder, new.name) == (
        ("convolutional",), "gemma3", "ltx-2.3")
    # a 2.5 transformer cannot read Gemma 3's features: refused, naming both
    stock = tmp_path / "gemma3-in-25"
    shutil.copytree(tiny_model_v25, stock, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copy(tiny_model_v23 / "text_encoder" / "config.json",
                stock / "text_encoder" / "config.json")
    with pytest.raises(ValueError, match=r"text encoder is 'gemma3'.*LTX-2.5.*gemma4"):
        read_profile(stock)


def test_every_training_and_sampling_forward_carries_the_profile(model, tmp_path):
    profile = read_profile(model)
    spec = parse_spec({"trainingDataUrl": "s3://bucket/data.zip", "numberOfFrames": 25,
                       "resolution": "low", "aspectRatio": "16:9", "withAudio": True})
    trainer = Trainer(spec, model, tmp_path, CPU, TrainSettings(max_sequence_length=16))
    trainer._load()
    texts = encode_texts(model, ["a square glides in", ""], CPU, 16)
    sample = {"video": torch.randn(8, SUFFIX.latent_frames, 3, 5),
              "audio": torch.randn(SUFFIX.audio_latent_frames, 8),
              "text": texts[text_key("a square glides in")]}
    calls, hook = record_forwards(trainer.transformer)
    try:
        for step in range(3):
            trainer.backward(trainer.prepare(sample, SUFFIX, step_generator(0, step)),
                             sample["text"])
        training, calls[:] = list(calls), []
        models = Models(trainer.transformer, trainer.connectors,
                        *(load_component(model, n, CPU) for n in COMPONENTS[2:]))
        video = torch.rand(1, 3, 25, 96, 160) * 2 - 1
        audio = torch.zeros(2, round(25 / 24 * 16_000))
        extend_backward(models, profile, video, audio, texts[text_key("a square glides in")],
                        texts[text_key("")], suffix=SUFFIX, with_audio=True, steps=2,
                        max_sequence_length=16)
        sampling = list(calls)
    finally:
        hook.remove()
    assert len(training) == 3 and len(sampling) == 2 * 3  # per step: CFG, STG, modality
    for call in training + sampling:
        assert call["use_cross_timestep"] is profile.use_cross_timestep
    # training: each stream's own sigma reaches the prompt modulation
    assert all(not torch.equal(c["sigma"], c["audio_sigma"]) for c in training)
    assert {tuple(c["spatio_temporal_guidance_blocks"] or ()) for c in sampling} == {
        (), profile.guidance.stg_blocks}

    # LTX-2.5's keyframe marker: every sampling pass marks latent frame 0 (its first
    # height × width tokens), as ltx-core's inference does; training, as Lightricks' trainer,
    # and the other versions (which have no such embedding) never mark anything
    assert all(c["video_keyframes_mask"] is None for c in training)
    for call in sampling:
        mask = call["video_keyframes_mask"]
        if not profile.first_frame_marker:
            assert mask is None
            continue
        frame = call["height"] * call["width"]
        assert mask.shape == (*call["hidden_states"].shape[:2], 1)
        assert bool((mask[:, :frame] == 1).all()) and bool((mask[:, frame:] == 0).all())


def test_ltx25_previews_apply_the_keyframe_marker_to_frame_0(tiny_model_v25):
    """The marker reaches the model: with a learned (non-zero) embedding, a sampling call
    predicts otherwise than training's call on the same inputs, and training's call is the
    call with the marker switched off."""
    from ltx_trainer.model.forward import Geometry, StreamState, TextContext, predict

    profile = read_profile(tiny_model_v25)
    transformer = load_component(tiny_model_v25, "transformer", CPU)
    geometry = Geometry(frames=3, height=2, width=3, audio_frames=4, fps=24.0)
    generator = torch.Generator().manual_seed(0)
    config = transformer.config
    video = StreamState(torch.randn(1, geometry.video_tokens, config.in_channels,
                                    generator=generator), torch.full((1, 18), 0.7), 0.7)
    audio = StreamState(torch.randn(1, 4, config.audio_in_channels, generator=generator),
                        torch.full((1, 4), 0.7), 0.7)
    text = TextContext(torch.randn(1, 5, config.cross_attention_dim, generator=generator),
                       torch.randn(1, 5, config.audio_cross_attention_dim, generator=generator),
                       torch.ones(1, 5))
    with torch.no_grad():
        transformer.keyframes_abs_pos_embedding.normal_(generator=generator)

        def run(**kwargs) -> torch.Tensor:
            return predict(transformer, profile, video, audio, text, geometry, isolate=True,
                           **kwargs)[0]

        trained, sampled = run(), run(sampling=True)
        unmarked = predict(transformer, dataclasses.replace(profile, first_frame_marker=False),
                           video, audio, text, geometry, isolate=True, sampling=True)[0]
    assert torch.equal(trained, unmarked)
    assert not torch.allclose(sampled, trained)
