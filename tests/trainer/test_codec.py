"""The layer under training and previews: its functions agree with diffusers' LTX-2
pipeline helpers they replace, and the layers import only downwards."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import ltx_trainer
from ltx_trainer.codec import latents as codec
from ltx_trainer.codec.text import pad_left
from ltx_trainer.model.loader import load_component

PACKAGE = Path(ltx_trainer.__file__).parent
CPU = torch.device("cpu")


def test_packing_and_normalising_match_the_pipeline_helpers(tiny_model):
    """The pipeline's static helpers are the reference (tests only call them)."""
    from diffusers import LTX2Pipeline

    vae = load_component(tiny_model, "vae", CPU)
    audio_vae = load_component(tiny_model, "audio_vae", CPU)
    video = torch.randn(1, 8, 4, 3, 5)
    packed = codec.pack_video(video)
    assert torch.equal(packed, LTX2Pipeline._pack_latents(video))
    assert torch.equal(codec.unpack_video(packed, 4, 3, 5),
                       LTX2Pipeline._unpack_latents(packed, 4, 3, 5))
    args = (vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    assert torch.allclose(codec.normalize_video(vae, video),
                          LTX2Pipeline._normalize_latents(video, *args))
    assert torch.allclose(codec.denormalize_video(vae, video),
                          LTX2Pipeline._denormalize_latents(video, *args))
    audio = torch.randn(1, 2, 26, 4)
    tokens = codec.pack_audio(audio)
    assert torch.equal(tokens, LTX2Pipeline._pack_audio_latents(audio))
    assert torch.equal(codec.unpack_audio(tokens, 4),
                       LTX2Pipeline._unpack_audio_latents(tokens, 26, num_mel_bins=4))
    stats = (audio_vae.latents_mean, audio_vae.latents_std)
    assert torch.allclose(codec.normalize_audio(audio_vae, tokens),
                          LTX2Pipeline._normalize_audio_latents(tokens, *stats))
    assert torch.allclose(codec.denormalize_audio(audio_vae, tokens),
                          LTX2Pipeline._denormalize_audio_latents(tokens, *stats))


def test_text_padding_is_on_the_left_as_the_tokenizer_pads():
    embeds = torch.arange(6.0).reshape(3, 2).to(torch.bfloat16)
    padded, mask = pad_left(embeds, 5, CPU, torch.float32)
    assert padded.dtype == torch.float32 and padded.shape == (1, 5, 2)
    assert mask.tolist() == [[0, 0, 1, 1, 1]]
    assert torch.equal(padded[0, 2:], embeds.float()) and not padded[0, :2].any()


def _imports(path: Path) -> set[str]:
    """The ltx_trainer modules a file imports (relative imports resolved)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("ltx_trainer")}


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("codec", ("training", "preview")),
    ("model", ("training", "preview", "codec")),
    ("training", ("preview",)),
    ("preview", ("training",)),
])
def test_layers_import_only_downwards(layer, forbidden):
    for path in (PACKAGE / layer).rglob("*.py"):
        bad = {m for m in _imports(path)
               if any(m.startswith(f"ltx_trainer.{f}") for f in forbidden)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_no_private_pipeline_helper_is_called():
    private = re.compile(r"LTX2\w*Pipeline\w*\)?\.\s*_\w+|pipe\._\w+\(")
    for path in PACKAGE.rglob("*.py"):
        assert not private.search(path.read_text()), path.relative_to(PACKAGE)
