"""The LoRA file as other tools read it: ComfyUI and Lightricks' ltx-core apply a LoRA at
scale 1 (they ignore alpha; the official files hold no `.alpha` tensors) under the single
file's names."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ltx_trainer.model.adapter import LORA_SCALE, add_lora, check_lora_scale, lora_alpha
from ltx_trainer.model.loader import load_component
from ltx_trainer.model.lora import LORA_PREFIX, lora_key
from ltx_trainer.model.single_file import TRANSFORMER_PREFIX, original_key
from ltx_trainer.training.lora import write_lora_file

CPU = torch.device("cpu")


@pytest.fixture
def adapted(tiny_model_v23):
    transformer = load_component(tiny_model_v23, "transformer", CPU, torch.float32)
    torch.manual_seed(0)
    add_lora(transformer, 4, ("video", "audio"))
    with torch.no_grad():  # a trained-looking LoRA: B is zero at the start
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return transformer


def test_alpha_is_the_rank_in_one_place_and_the_file_applies_at_scale_1(adapted, tmp_path):
    assert lora_alpha(32) == 32 and LORA_SCALE == 1.0
    path = write_lora_file(adapted, {"rank": 4, "alpha": lora_alpha(4)}, tmp_path / "l.st")
    saved = load_file(path)
    assert not [k for k in saved if k.endswith(".alpha")]  # as the official files
    # ComfyUI / ltx-core: each base weight W under its single-file name gains B @ A
    base = {original_key("transformer", k, None): (k, v) for k, v in adapted.state_dict().items()
            if "lora_" not in k and "base_layer" not in k}
    base.update({original_key("transformer", k.replace(".base_layer", ""), None): (k, v)
                 for k, v in adapted.state_dict().items() if ".base_layer." in k})
    modules = dict(adapted.named_modules())
    pairs = 0
    for key in (k for k in saved if ".lora_A." in k):
        target = TRANSFORMER_PREFIX + key.removeprefix(LORA_PREFIX).replace(".lora_A", "")
        assert target in base, f"{key} maps to no weight of the single file ({target})"
        down, up = saved[key].float(), saved[key.replace(".lora_A.", ".lora_B.")].float()
        merged = base[target][1].float() + LORA_SCALE * up @ down
        module = modules[base[target][0].removesuffix(".base_layer.weight")]
        x = torch.randn(3, merged.shape[1])
        with torch.no_grad():
            ours = module(x)
        expected = torch.nn.functional.linear(x, merged, module.base_layer.bias)
        # bf16 file weights: compare at bf16's precision
        torch.testing.assert_close(ours, expected, rtol=2e-2, atol=2e-2)
        pairs += 1
    assert pairs == len(saved) // 2 > 0


def test_a_lora_scaled_otherwise_is_refused_before_it_is_written(adapted, tmp_path):
    name, layer = next((n, m) for n, m in adapted.named_modules() if hasattr(m, "scaling")
                       and m.scaling)
    layer.scaling["default"] = 2.0  # alpha = 2 × rank
    with pytest.raises(ValueError, match=rf"{name}.*scaled 2.*alpha = rank"):
        check_lora_scale(adapted)
    with pytest.raises(ValueError, match="alpha = rank"):
        write_lora_file(adapted, {}, tmp_path / "l.st")
    assert not (tmp_path / "l.st").exists()


def test_lora_keys_go_through_the_single_files_rename_table():
    # the attention projections keep their names; a renamed segment is renamed the same
    # way as in the single file (q/k norms: norm_q → q_norm)
    key = "transformer_blocks.3.attn1.to_q.lora_A.weight"
    assert lora_key(key) == "diffusion_model.transformer_blocks.3.attn1.to_q.lora_A.weight"
    norm = "transformer_blocks.3.attn1.norm_q.lora_A.weight"
    assert lora_key(norm) == LORA_PREFIX + original_key("transformer", norm, None).removeprefix(
        TRANSFORMER_PREFIX)
    assert lora_key(norm).endswith("attn1.q_norm.lora_A.weight")
