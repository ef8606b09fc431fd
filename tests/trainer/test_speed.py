"""What makes a training step fast keeps it correct: the connector outputs kept per caption,
LoRA inputs left in bf16, checkpointing of only some blocks, the SDPA kernels, the optimizer
settings. At the real widths (the one-block LTX-2.3 model) where the width matters, on the
tiny model where only the training loop does."""

from __future__ import annotations

import pytest
import torch

from ltx_contract.outcomes import InvalidInput
from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow
from ltx_trainer.model.adapter import set_input_casting
from ltx_trainer.model.forward import AttentionKernels, TextContext
from ltx_trainer.model.loader import FolderModel, WithDtype
from ltx_trainer.training.speed import checkpoint_blocks, make_optimizer, planned_checkpointing
from ltx_trainer.training.trainer import Trainer, TrainSettings, step_generator

CPU = torch.device("cpu")
BF16 = torch.bfloat16


def spec(**fields):
    return parse_spec({"trainingDataUrl": "s3://bucket/data.zip", "numberOfFrames": 25,
                       "resolution": "low", "aspectRatio": "16:9", **fields})


def sample_for(trainer: Trainer, rows: int, cols: int, tokens: int = 5
               ) -> tuple[dict[str, torch.Tensor], SuffixWindow]:
    """A cached sample of the trainer's model's channels (CPU, text in bf16)."""
    suffix = SuffixWindow(25, 24, 8)
    config, connectors = trainer.transformer.config, trainer.connectors.config
    text = torch.randn(tokens, connectors.caption_channels * connectors.text_proj_in_factor,
                       generator=torch.Generator().manual_seed(1))
    return {"video": torch.randn(config.in_channels, suffix.latent_frames, rows, cols),
            "audio": torch.randn(suffix.audio_latent_frames, config.audio_in_channels),
            "text": text.to(torch.bfloat16)}, suffix


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_connectors_run_once_per_caption_and_train_the_same(tiny_model_v23, tmp_path):
    """Three steps on one caption: with the kept connector outputs the connectors run once,
    and the losses and the LoRA are exactly those of running them in every step."""
    runs = {}
    for kept in (True, False):
        trainer = Trainer(spec(), tiny_model_v23, tmp_path / str(kept), CPU,
                          TrainSettings(max_sequence_length=16))
        trainer._load()
        calls = count_calls(trainer.connectors)
        sample, suffix = sample_for(trainer, 3, 5)
        losses = []
        for step in range(3):
            text = trainer.caption_context("k", sample["text"]) if kept else sample["text"]
            if kept:
                assert isinstance(text, TextContext) and not text.video.requires_grad
            inputs = trainer.prepare(sample, suffix, step_generator(0, step))
            losses.append(trainer.backward(inputs, text)[0]["total"].item())
            trainer.optimizer_step()
        runs[kept] = calls[0], losses, [p.detach().clone() for p in trainer.params]
    assert runs[True][0] == 1 and runs[False][0] == 3
    assert runs[True][1] == runs[False][1]
    assert all(torch.equal(a, b) for a, b in zip(runs[True][2], runs[False][2], strict=True))


def test_bad_speed_settings_are_refused_by_name(tiny_model_v23, tmp_path):
    with pytest.raises(InvalidInput, match=r"checkpointed blocks .* 2 transformer blocks, not 3"):
        Trainer(spec(), tiny_model_v23, tmp_path, CPU, TrainSettings(checkpointed_blocks=3))
    with pytest.raises(InvalidInput, match="unknown attention backend 'fast'"):
        Trainer(spec(), tiny_model_v23, tmp_path, CPU, TrainSettings(attention_backend="fast"))


def test_the_command_line_offers_every_attention_backend():
    from ltx_trainer.cli import build_parser
    from ltx_trainer.model.forward import ATTENTION_BACKENDS

    args = build_parser().parse_args(["train", "s.yaml", "--attention-backend", "math",
                                      "--checkpointed-blocks", "2", "--compile-backend", "eager"])
    assert (args.attention_backend, args.checkpointed_blocks, args.compile_backend) == \
        ("math", 2, "eager")
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]
                  ._actions if a.dest == "attention_backend")
    assert tuple(action.choices) == ATTENTION_BACKENDS


def test_the_optimizer_is_fused_on_cuda_and_takes_the_lora_as_it_is():
    params = [torch.nn.Parameter(torch.zeros(4, 2))]
    assert make_optimizer(params, 1e-4, 0.0, torch.device("cuda")).defaults["fused"] is True
    assert not make_optimizer(params, 1e-4, 0.0, CPU).defaults["fused"]
    # off a GPU no blocks are checkpointed: CPU memory is not what limits a step there
    assert planned_checkpointing(None, None, 1024, CPU) == 0


@pytest.fixture(scope="module")
def real_width(real_shape_models, tmp_path_factory):
    """A trainer on the one-block LTX-2.3 model at its real widths, in bf16 (as on a GPU)
    on the CPU."""
    model = WithDtype(FolderModel(real_shape_models.diffusers), BF16)
    trainer = Trainer(spec(rank=8), model, tmp_path_factory.mktemp("rw"), CPU,
                      TrainSettings(max_sequence_length=128))
    trainer._load()
    sample, suffix = sample_for(trainer, 2, 2, tokens=7)
    yield trainer, sample, trainer.prepare(sample, suffix, step_generator(0, 0))
    trainer.release()


def gradients(trainer: Trainer, inputs, text) -> tuple[float, list[torch.Tensor]]:
    losses, _ = trainer.backward(inputs, text)
    return losses["total"].item(), [p.grad.clone() for p in trainer.params]


def test_at_real_widths_each_speed_measure_gives_the_same_step(real_width):
    trainer, sample, inputs = real_width
    assert trainer.transformer.dtype == torch.bfloat16 and trainer.checkpointed == []
    # the LoRA weights and their gradients are fp32 and contiguous, as fused AdamW takes them
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in trainer.params)
    lora_input = {}
    layer = trainer.transformer.transformer_blocks[0].attn1.to_q.lora_A["default"]
    hook = layer.register_forward_pre_hook(lambda _, args: lora_input.update(dtype=args[0].dtype))
    kernels = AttentionKernels()
    with kernels:
        loss, grads = gradients(trainer, inputs, trainer.caption_context("c", sample["text"]))
    hook.remove()
    assert lora_input["dtype"] == torch.bfloat16  # no fp32 copy of the activations
    assert grads[0].dtype == torch.float32
    # every attention (self, cross to text) went through a fused SDPA kernel, none the math one
    assert kernels.kernels == {"flash (CPU)"} and len(kernels.calls) >= 3
    # the kept connector outputs: the same step as running the connectors in it
    same = gradients(trainer, inputs, sample["text"])
    assert same[0] == loss and all(torch.equal(a, b) for a, b in zip(grads, same[1], strict=True))
    # the block checkpointed: its forward runs again in the backward, to the same gradients
    assert checkpoint_blocks(trainer.transformer, 1) == [0]
    again = gradients(trainer, inputs, trainer.caption_context("c", sample["text"]))
    checkpoint_blocks(trainer.transformer, 0)
    assert again[0] == loss
    assert all(torch.allclose(a, b, rtol=1e-2, atol=1e-6)
               for a, b in zip(grads, again[1], strict=True))
    # peft's own input casts: the same loss up to bf16 rounding
    set_input_casting(trainer.transformer, True)
    cast = gradients(trainer, inputs, trainer.caption_context("c", sample["text"]))
    set_input_casting(trainer.transformer, False)
    assert cast[0] == pytest.approx(loss, rel=2e-2)


def test_the_compiled_blocks_give_the_same_step(tiny_model_v23, tmp_path):
    """Regional compilation (dynamo's graph of one block, reused by both; the eager
    backend here, inductor on a GPU): the step's loss and gradients are unchanged."""
    steps = {}
    for backend in (None, "eager"):
        trainer = Trainer(spec(), tiny_model_v23, tmp_path / str(backend), CPU,
                          TrainSettings(max_sequence_length=16, compile_backend=backend))
        trainer._load()
        blocks = trainer.transformer.transformer_blocks
        assert all((block._compiled_call_impl is not None) == bool(backend) for block in blocks)
        sample, suffix = sample_for(trainer, 3, 5)
        inputs = trainer.prepare(sample, suffix, step_generator(0, 0))
        steps[backend] = gradients(trainer, inputs, trainer.caption_context("k", sample["text"]))
    assert steps["eager"][0] == pytest.approx(steps[None][0], rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7)
               for a, b in zip(steps[None][1], steps["eager"][1], strict=True))
