"""The low-memory mode on LTX-2.3's real widths (one block): int8 base weights train the
LoRA to the same losses as full precision, within the rounding int8 allows."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import RealShapeModels

from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.codec.text import encode_texts, text_key
from ltx_trainer.model.low_memory import (
    eight_bit_optimizer_runs_on,
    int8_bytes,
    quantizable,
    quantize_frozen,
)
from ltx_trainer.training.speed import make_optimizer
from ltx_trainer.training.trainer import Trainer, TrainSettings, step_generator

CPU = torch.device("cpu")
STEPS = 2
#: Per-channel int8 rounds each weight by at most 1/254 of its row's largest magnitude;
#: over the block's matmuls that moves the prediction by well under 1 %, and the loss (a
#: mean of squares over the same noise) by about as much. 2 % leaves room for the
#: different LoRA update those predictions give after the first step; a broken quantization
#: (a wrong scale, a dropped bias) moves the loss far more.
LOSS_RTOL = 0.02


def _losses(trainer: Trainer, sample: dict, suffix: SuffixWindow) -> list[float]:
    losses = []
    for step in range(STEPS):
        inputs = trainer.prepare(sample, suffix, step_generator(0, step))
        step_losses, _ = trainer.backward(inputs, sample["text"])
        trainer.optimizer.step()
        losses.append(step_losses["total"].item())
    return losses


@pytest.mark.timeout(1500)  # with the session's 7 GB real-shape models written first
def test_int8_base_weights_train_like_full_precision(real_shape_models: RealShapeModels,
                                                     tmp_path) -> None:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from torchao.quantization import Int8Tensor

    model = real_shape_models.diffusers
    settings = TrainSettings(max_sequence_length=128, seed=0)
    spec = parse_spec({"trainingDataUrl": "https://example.com/c.zip", "numberOfSteps": 100,
                       "numberOfFrames": 17, "rank": 8, "learningRate": 1e-2,
                       "withAudio": False})
    text = encode_texts(model, ["a square glides in"], CPU, 128)[text_key("a square glides in")]
    trainer = Trainer(spec, model, tmp_path, CPU, settings)
    trainer._load()
    generator = torch.Generator().manual_seed(0)
    suffix = SuffixWindow(17, 24, 8)
    sample = {"video": torch.randn(128, 3, 2, 2, generator=generator), "text": text,
              "audio": torch.randn(suffix.audio_latent_frames,
                                   trainer.transformer.config.audio_in_channels,
                                   generator=generator)}
    lora = copy.deepcopy(get_peft_model_state_dict(trainer.transformer))
    trainer.optimizer = make_optimizer(trainer.params, spec.learning_rate, 0.0, CPU)
    full = _losses(trainer, sample, suffix)

    set_peft_model_state_dict(trainer.transformer, lora)  # the same start, int8 base
    layers = quantize_frozen(trainer.transformer)
    # on the CPU the 8-bit optimizer's kernels do not run: torch's AdamW stays
    trainer.optimizer = make_optimizer(trainer.params, spec.learning_rate, 0.0, CPU,
                                       low_memory=True)
    assert type(trainer.optimizer) is torch.optim.AdamW
    low = _losses(trainer, sample, suffix)

    blocks = trainer.transformer.transformer_blocks[0]
    assert isinstance(blocks.attn1.to_q.base_layer.weight, Int8Tensor)
    assert not isinstance(blocks.attn1.to_q.lora_A["default"].weight, Int8Tensor)
    assert layers == len(quantizable(trainer.transformer)) > 0
    assert not isinstance(trainer.transformer.proj_out.weight, Int8Tensor)
    assert low != full  # the weights did change
    torch.testing.assert_close(torch.tensor(low), torch.tensor(full), rtol=LOSS_RTOL, atol=0)


def test_what_the_low_memory_mode_keeps() -> None:
    from ltx_trainer.model.shapes import LTX_2_3, build_meta, parameter_count

    transformer = build_meta(LTX_2_3, "transformer")
    bf16, int8 = int8_bytes(transformer)
    quantized = sum(m.weight.numel() for m in quantizable(transformer).values())
    assert quantized / parameter_count(transformer) > 0.97  # the blocks' linear weights
    assert int8 < 0.51 * bf16
    assert eight_bit_optimizer_runs_on(torch.device("cuda"))
    assert not eight_bit_optimizer_runs_on(CPU)
    params = [torch.nn.Parameter(torch.zeros(4))]
    assert type(make_optimizer(params, 1e-3, 0.0, CPU, low_memory=True)) is torch.optim.AdamW


def test_the_trainer_in_low_memory_mode_trains_on_int8_base_weights(tiny_model_v23,
                                                                    tmp_path) -> None:
    from torchao.quantization import Int8Tensor

    spec = parse_spec({"trainingDataUrl": "https://example.com/c.zip", "withAudio": False})
    trainer = Trainer(spec, tiny_model_v23, tmp_path, CPU, TrainSettings(low_memory=True))
    trainer._load()
    block = trainer.transformer.transformer_blocks[0]
    assert isinstance(block.attn1.to_q.base_layer.weight, Int8Tensor)
    assert all(not isinstance(p, Int8Tensor) and p.dtype == torch.float32
               for p in trainer.params)  # the LoRA trains in full precision
    assert type(trainer.optimizer) is torch.optim.AdamW  # the 8-bit one is CUDA's


@pytest.mark.parametrize("flag", [["--low-memory"], []])
def test_low_memory_is_a_train_flag(flag: list[str]) -> None:
    from ltx_trainer.cli import build_parser

    args = build_parser().parse_args(["train", "spec.yaml", *flag])
    assert args.low_memory is (True if flag else None)
