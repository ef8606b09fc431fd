"""The backward-extension sampler, guidance, the reel and `ltx-extend extend`."""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np
import pytest
import torch

from ltx_contract.outcomes import ExitCode
from ltx_contract.spec import frame_size
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.cli import main
from ltx_trainer.codec.latents import encode_video, pack_video
from ltx_trainer.codec.text import encode_texts, text_key
from ltx_trainer.codec.video import read_video
from ltx_trainer.dataset.media import probe
from ltx_trainer.dataset.prepare import fit_closing_clip
from ltx_trainer.model.loader import load_component, read_profile
from ltx_trainer.preview.reel import ReelPart, write_reel
from ltx_trainer.preview.sampler import Models, extend_backward

from harness.media_factory import make_clip, psnr, read_frames

CPU = torch.device("cpu")
SUFFIX = SuffixWindow(25, 24, 8)
COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "scheduler")


def load_setup(model, clip_dir):
    models = Models(*(load_component(model, n, CPU) for n in COMPONENTS))
    texts = encode_texts(model, ["a square glides in", ""], CPU, 32)
    clip = make_clip(clip_dir / "closing.mp4", 25 / 24, fps=24, size=(128, 128))
    rate = models.audio_vae.config.sample_rate
    t = np.arange(round(25 / 24 * rate)) / rate
    audio = torch.from_numpy(np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2).astype(np.float32))
    return models, texts, read_video(clip), audio, clip, read_profile(model)


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    return load_setup(tiny_model, tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def setup_v23(tiny_model_v23, tmp_path_factory):
    return load_setup(tiny_model_v23, tmp_path_factory.mktemp("clip-v23"))


def run(setup, **overrides):
    models, texts, video, audio, _, profile = setup
    kwargs = dict(suffix=SUFFIX, with_audio=True, steps=3, stg_scale=1.0, seed=0,
                  max_sequence_length=32)
    kwargs.update(overrides)
    return extend_backward(models, profile, video, audio, texts[text_key("a square glides in")],
                           texts[text_key("")], **kwargs)


def test_output_shape_determinism_and_kept_suffix(setup):
    models, _, video, _, _, _ = setup
    first, again, other = run(setup), run(setup), run(setup, seed=1)
    assert first.frames.shape == (25, 128, 128, 3) and first.frames.dtype == np.uint8
    assert np.array_equal(first.frames, again.frames)  # deterministic for a seed
    assert not np.array_equal(first.frames, other.frames)
    # the suffix latents are the input's own, exactly; the lead-in is generated
    clean = pack_video(encode_video(models.vae, video).unsqueeze(0))
    per_frame = clean.shape[1] // SUFFIX.latent_frames
    start = SUFFIX.first_suffix_latent * per_frame
    assert torch.equal(first.latents[:, start:], clean[:, start:])
    assert not torch.allclose(first.latents[:, :start], clean[:, :start], atol=1e-2)


def test_audio_exactly_when_asked(setup):
    with_audio, without = run(setup), run(setup, with_audio=False)
    assert without.audio is None
    assert with_audio.audio.shape[0] == 2 and with_audio.sample_rate == 16_000
    assert with_audio.audio.shape[1] / with_audio.sample_rate == pytest.approx(25 / 24, abs=0.05)


def test_ltx23_audio_comes_out_of_the_bwe_vocoder_at_its_own_rate(setup_v23):
    models, profile = setup_v23[0], setup_v23[5]
    assert type(models.vocoder).__name__ == profile.vocoder_class == "LTX2VocoderWithBWE"
    result = run(setup_v23, steps=2)
    assert result.sample_rate == models.vocoder.config.output_sampling_rate == 48_000
    assert result.audio.shape[0] == 2
    assert result.audio.shape[1] / 48_000 == pytest.approx(25 / 24, abs=0.05)
    assert np.abs(result.audio).max() > 0


def test_components_in_bf16_as_on_a_gpu_sample_the_same_clip(tiny_model_v23, setup_v23):
    """Every pass of the sampler with bf16 components (what a GPU loads), with audio: the
    fp32 tensors it is given meet them in their dtype, its Euler state stays fp32."""
    _, texts, video, audio, _, profile = setup_v23
    bf16 = Models(*(load_component(tiny_model_v23, n, CPU, torch.bfloat16)
                    for n in COMPONENTS[:-1]), load_component(tiny_model_v23, "scheduler", CPU))
    result = run((bf16, texts, video, audio, None, profile), steps=2)
    reference = run(setup_v23, steps=2)
    assert result.frames.shape == reference.frames.shape and result.audio is not None
    assert result.latents.dtype == torch.float32  # the Euler state stays fp32
    assert np.isfinite(result.audio).all()
    assert psnr(result.frames[-8:], reference.frames[-8:]) > 20  # the kept suffix, decoded


def test_guidance_passes_and_their_effect(setup):
    models, profile = setup[0], setup[5]
    calls = []
    hook = models.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((
            kwargs["hidden_states"].shape[0], kwargs["spatio_temporal_guidance_blocks"],
            kwargs["isolate_modalities"])), with_kwargs=True)
    try:
        full = run(setup, stg_scale=1.0)
        full_calls, calls[:] = list(calls), []
        no_stg = run(setup, stg_scale=0.0)
        no_stg_calls, calls[:] = list(calls), []
        run(setup, with_audio=False, stg_scale=0.0)
        silent_calls = list(calls)
    finally:
        hook.remove()
    blocks = list(profile.guidance.stg_blocks)
    # per step: CFG (negative and positive as one batch), STG, modality isolation
    assert full_calls == [(2, None, False), (1, blocks, False), (1, None, True)] * 3
    assert no_stg_calls == [(2, None, False), (1, None, True)] * 3
    assert silent_calls == [(2, None, True)] * 3  # video only: isolated, no modality pass
    assert not np.array_equal(full.frames, no_stg.frames)
    no_cfg = run(setup, stg_scale=0.0, guidance=replace(profile.guidance, video_cfg=1.0,
                                                         audio_cfg=1.0))
    assert not np.array_equal(no_stg.frames, no_cfg.frames)
    no_rescale = run(setup, stg_scale=0.0, guidance=replace(profile.guidance, rescale=0.0))
    assert not np.array_equal(no_stg.frames, no_rescale.frames)
    audio_cfg = run(setup, stg_scale=0.0, guidance=replace(profile.guidance, audio_cfg=3.0))
    assert not np.array_equal(no_stg.audio, audio_cfg.audio)  # audio has its own scale


def test_reel_decodes_with_streams_duration_and_size(setup, tmp_path):
    result = run(setup)
    cut = SUFFIX.first_suffix_frame
    part = ReelPart(lead_in=result.frames[:cut], closing=result.frames[cut:], prompt="p",
                    lead_in_audio=result.audio, lead_in_rate=result.sample_rate,
                    closing_audio=result.audio, closing_rate=result.sample_rate)
    reel = write_reel([part, part], tmp_path / "reel.mp4", fps=24)
    with av.open(str(reel)) as container:
        streams = {s.type: s for s in container.streams}
        assert set(streams) == {"video", "audio"}
        assert streams["video"].codec_context.name == "h264"
        assert streams["audio"].codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert container.duration / 1e6 == pytest.approx(50 / 24, abs=0.05)
    assert len(frames) == 50 and frames[0].shape == (128, 128, 3)
    assert frames[0][:4].mean() < 40  # the label band is drawn on top
    silent = write_reel([ReelPart(result.frames[:cut], result.frames[cut:], "p")],
                        tmp_path / "silent.mp4", fps=24)
    with av.open(str(silent)) as container:
        assert [s.type for s in container.streams] == ["video"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reel.mp4", "silent.mp4"]


TINY = {"2.0": "tiny_model", "2.3": "tiny_model_v23", "2.5": "tiny_model_v25"}


@pytest.mark.parametrize("version", sorted(TINY))
def test_extend_command(setup, request, tmp_path, version):
    model = request.getfixturevalue(TINY[version])
    out = tmp_path / "extended.mp4"
    assert main(["extend", "--model", str(model), "--clip", str(setup[4]), "--prompt",
                 "a square glides in", "--output", str(out), "--frames", "17", "--resolution",
                 "low", "--audio", "--steps", "2"]) == ExitCode.SUCCESS
    with av.open(str(out)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert container.streams.video[0].frames == 17
    if version != "2.0":
        return
    # the output ends with the clip's own fitted frames; --decoded-ending with the model's
    fitted_path = tmp_path / "fitted.mp4"
    fit_closing_clip(setup[4], probe(setup[4]), 17, 24, frame_size("low", "1:1"), fitted_path,
                     None, normalize=True, preserve_pitch=True)
    fitted = read_frames(fitted_path)[-8:]
    decoded = tmp_path / "decoded.mp4"
    assert main(["extend", "--model", str(model), "--clip", str(setup[4]), "--prompt",
                 "a square glides in", "--output", str(decoded), "--frames", "17",
                 "--resolution", "low", "--steps", "2", "--decoded-ending"]) == ExitCode.SUCCESS
    assert psnr(read_frames(out)[-8:], fitted) >= 35
    assert psnr(read_frames(decoded)[-8:], fitted) < 35


def test_extend_refuses_a_short_clip_before_loading_any_model(tmp_path, capsys):
    short = make_clip(tmp_path / "short.mp4", 0.2, fps=24, size=(64, 64))
    assert main(["extend", "--model", str(tmp_path / "no-model-here"), "--clip", str(short),
                 "--prompt", "p", "--output", str(tmp_path / "o.mp4"),
                 "--conditioning-frames", "16"]) == ExitCode.INVALID_INPUT
    assert "The clip must be at least conditioningFrames (16) frames long at 24 fps" in \
        capsys.readouterr().err


def test_extend_names_a_missing_model_folder(setup, tmp_path, capsys):
    assert main(["extend", "--model", str(tmp_path / "nowhere"), "--clip", str(setup[4]),
                 "--prompt", "p", "--output", str(tmp_path / "o.mp4"), "--frames", "17",
                 "--resolution", "low"]) == ExitCode.INVALID_INPUT
    assert "is not a diffusers model folder (no model_index.json)" in capsys.readouterr().err


def test_ltx25_decodes_with_the_decoder_it_ships_and_says_which(tiny_model_v25, caplog):
    from ltx_trainer.codec.latents import decode_video
    from ltx_trainer.model.decoders import choose_decoder

    profile = read_profile(tiny_model_v25)
    assert profile.decoders == ("convolutional", "diffusion")
    with caplog.at_level("INFO", logger="ltx_trainer.model.decoders"):
        assert choose_decoder(profile, CPU) == "convolutional"  # both ship; no big GPU here
        assert choose_decoder(replace(profile, decoders=("diffusion",)), CPU) == "diffusion"
    assert "video decoder: convolutional (both ship and the cpu has 0 GiB (under 64 GiB))" \
        in caplog.text
    assert "video decoder: diffusion (the only video decoder the model ships)" in caplog.text
    # the diffusion decoder reads the same latents into frames of the same size
    vae = load_component(tiny_model_v25, "vae", CPU)
    decoder = load_component(tiny_model_v25, "diffusion_decoder", CPU)
    tokens = torch.randn(1, 2 * 3 * 3, vae.config.latent_channels,
                         generator=torch.Generator().manual_seed(0))
    by_diffusion = decode_video(vae, tokens, 2, 3, 3, decoder=decoder, seed=0)
    by_convolution = decode_video(vae, tokens, 2, 3, 3)
    assert by_diffusion.shape == by_convolution.shape == (9, 96, 96, 3)
    assert (by_diffusion != by_convolution).mean() > 0.5


def test_extend_refuses_a_lora_of_another_version(tiny_model_v23, tiny_model_v25, setup,
                                                  tmp_path, capsys):
    from safetensors.torch import save_file

    from ltx_trainer.model.lora import check_lora_version, lora_version

    weights = {"diffusion_model.x.lora_A.weight": torch.zeros(1, 1)}
    trained_on_23, unrecorded = tmp_path / "v23.safetensors", tmp_path / "old.safetensors"
    save_file(weights, trained_on_23, metadata={"baseModelVersion": "2.3"})
    save_file(weights, unrecorded, metadata={"trainingType": "extend-suffix"})
    assert lora_version(trained_on_23) == lora_version(unrecorded) == "ltx-2.3"
    check_lora_version(unrecorded, "ltx-2.3")  # today's files without the entry: LTX-2.3's
    out = tmp_path / "o.mp4"
    for lora, why in ((trained_on_23, ""), (unrecorded, r" \(it records no version")):
        assert main(["extend", "--model", str(tiny_model_v25), "--lora", str(lora), "--clip",
                     str(setup[4]), "--prompt", "p", "--output", str(out), "--frames", "17",
                     "--resolution", "low"]) == ExitCode.INVALID_INPUT
        err = capsys.readouterr().err
        assert f"the LoRA {lora} was trained on ltx-2.3" in err and "base model is ltx-2.5" in err
        assert ("records no version" in err) == bool(why)
    assert not out.exists()
