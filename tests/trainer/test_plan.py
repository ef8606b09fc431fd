"""`ltx-extend plan`: one training step of the 22B LTX-2.3, measured on the meta device."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from ltx_contract.spec import parse_spec
from ltx_trainer.commands import plan as planning
from ltx_trainer.commands.plan import table, variants
from ltx_trainer.model.shapes import LTX_2_3, ModelShapes
from ltx_trainer.training import measure
from ltx_trainer.training.measure import StepShape, measure_step
from ltx_trainer.training.memory import GIB, RESERVE_GIB, MemoryPlan, plan

SPEC = {"trainingDataUrl": "s3://datasets/clips.zip", "triggerPhrase": "LEADIN"}
H100 = 989e12


@pytest.fixture(scope="module")
def plans() -> list[MemoryPlan]:
    """The defaults (medium 768×768, 89 frames, rank 32, video only), with audio, and
    high (960×960) at 121 frames."""
    spec = parse_spec(SPEC)
    return [plan(s) for s in (spec, *variants(spec))]


def test_the_defaults(plans: list[MemoryPlan]) -> None:
    defaults = plans[0]
    step = defaults.step
    assert (step.video_tokens, step.audio_frames, step.text_tokens, step.rank) == (
        12 * 24 * 24, 93, 1024, 32)
    assert (defaults.transformer_params, defaults.connector_params) == (18_988_838_144,
                                                                        3_172_227_584)
    assert defaults.frozen_bytes == (18_988_838_144 + 3_172_227_584) * 2  # bf16
    # the trainer's adapter at rank 32 on a video-only run: the video attentions alone
    assert defaults.lora_params == 48 * 2_097_152
    assert defaults.lora_bytes == defaults.lora_params * 16  # fp32 weights, grads, AdamW
    # without checkpointing the 22B does not fit one 80 GB card; with it, it does
    assert defaults.peak(0) > 80 * GIB > defaults.peak(48)
    assert defaults.activations(48) < defaults.activations(0) / 10
    k = defaults.checkpointed_blocks
    assert 0 < k < 48
    budget = (80 - RESERVE_GIB) * GIB
    assert defaults.peak(k) <= budget < defaults.peak(k - 1)
    # checkpointing trades memory for the recomputed forwards of its blocks, which are
    # nearly all of the forward
    block = defaults.cost.block_forward_flops
    assert 0.9 * defaults.cost.forward_flops / 48 < block < defaults.cost.forward_flops / 48
    assert defaults.flops(48) - defaults.flops(k) == (48 - k) * defaults.cost.block_forward_flops
    assert defaults.seconds(k) == pytest.approx(defaults.flops(k) / (0.4 * H100))
    # the frozen connectors run once per caption without gradients: a small share, apart
    assert 0 < defaults.connector_flops < defaults.flops(0) / 20
    c = defaults.cost
    assert defaults.flops(0) == c.forward_flops + c.backward_flops


def test_audio_and_high_resolution_cost_more(plans: list[MemoryPlan]) -> None:
    defaults, audio, high = plans
    assert audio.step.with_audio and not defaults.step.with_audio
    assert audio.lora_params == 48 * 4_456_448  # with audio: every attention is a target
    assert audio.activations(0) > defaults.activations(0)
    assert audio.flops(0) > defaults.flops(0)  # the cross-modal attentions run
    assert (high.step.video_tokens, high.step.audio_frames) == (16 * 30 * 30, 126)
    tokens = high.step.video_tokens / defaults.step.video_tokens
    # activations grow with the tokens, not their square: attention runs fused, as on
    # the GPU (the attention matrix itself would be ~6 GB per layer at 6,912 tokens)
    assert high.activations(0) / defaults.activations(0) == pytest.approx(tokens, rel=0.1)
    assert tokens < high.flops(0) / defaults.flops(0) < tokens**2


def test_depth_is_carried_exactly() -> None:
    """Measured at depths 1 and 2 and carried to the model's depth: the same figures as
    a model of that depth measured directly."""
    step = StepShape("low", 2, 8, 8, 13, 256, 24.0, True, 8)
    three = ModelShapes("three", {**LTX_2_3.configs, "transformer": {
        **LTX_2_3.configs["transformer"], "num_layers": 3}})
    carried, _ = measure_step(three, step)
    text = measure._text_features(three, step)[:3]
    direct = measure._measure(three, step, text)
    assert (carried.forward_flops, carried.backward_flops) == (direct["forward"],
                                                               direct["backward"])
    assert carried.saved_outside == direct["outside"]
    assert carried.saved_per_block == direct["last_block"]
    assert carried.inputs_per_block == direct["last_inputs"]


def test_the_table(plans: list[MemoryPlan]) -> None:
    text = table(plans)
    lines = text.splitlines()
    assert lines[0].startswith("ltx-2.3: transformer 18.99 B + connectors 3.17 B parameters")
    assert "NVIDIA H100 SXM (989 TFLOP/s dense bf16) at 40% of peak" in lines[0]
    for label in ("medium 768×768, 89 frames", "high 960×960, 121 frames"):
        assert label in lines[2]
    assert "frozen weights, bf16" in text and f"{plans[0].frozen_bytes / GIB:,.1f} GiB" in text
    row = next(line for line in lines if line.startswith("fewest checkpointed blocks"))
    assert f"{plans[0].checkpointed_blocks} of 48" in row
    markdown = table(plans, markdown=True).splitlines()
    assert markdown[0].startswith("| per training step | medium 768×768, 89 frames | ")
    assert markdown[1] == "|---|---|---|---|"
    assert len(markdown) == len(lines) - 1  # the rows, without the heading line


# -- the command ------------------------------------------------------------------------

def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    planning.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", *argv])
    return args.func(args)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "training.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "ltx-training.io/v1alpha1",
                                    "kind": "LtxExtendTraining", "metadata": {"name": "a"},
                                    "spec": {**SPEC, "resolution": "low"}}))
    return path


def test_command_on_a_model_folder(spec_file: Path, tiny_model: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert _run(str(spec_file), "--model", str(tiny_model), "--with-variants") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tiny_model.name}: transformer")
    header = out.splitlines()[2]
    assert "low 512×512, 89 frames" in header and "audio" in header and "high 960×960" in header
    assert _run(str(spec_file), "--model", str(tiny_model), "--json", "--gpu", "a100",
                "--utilisation", "0.5") == 0
    summary = json.loads(capsys.readouterr().out)
    expected = plan(parse_spec({**SPEC, "resolution": "low"}), tiny_model, None, "a100", 0.5)
    assert {k: summary[k] for k in expected.summary()} == expected.summary()
    assert summary["gpu"] == "NVIDIA A100" and summary["gpuMemoryGiB"] == 80
    assert summary["videoTokens"] == 12 * 16 * 16 and summary["checkpointedBlocks"] == 0


def test_command_on_a_single_file(spec_file: Path, tiny_model: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    """A checkpoint's shapes come from its header: no Gemma folder is needed to plan."""
    from ltx_trainer.model.writer import write_layouts

    checkpoint = write_layouts({"single-file": tmp_path / "single"},
                               ModelShapes.from_folder(tiny_model))["single-file"]
    for model in (checkpoint, tiny_model):
        assert _run(str(spec_file), "--model", str(model), "--json") == 0
    from_file, from_folder = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert from_file.pop("model") == "tiny" == from_folder.pop("model")
    assert from_file == from_folder


def test_command_refuses_bad_input(spec_file: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "numberOfFrames": 500}))
    assert _run(str(bad)) == 3
    assert "numberOfFrames" in capsys.readouterr().err
    assert _run(str(spec_file), "--model", str(tmp_path / "nowhere")) == 3
    assert "is neither a release" in capsys.readouterr().err
    assert _run(str(spec_file), "--model", str(tmp_path)) == 3  # a folder, but no model
    assert "not an LTX-2 diffusers model folder" in capsys.readouterr().err
    assert _run(str(spec_file), "--utilisation", "1.5") == 3
    assert "--utilisation must be in (0, 1]" in capsys.readouterr().err


def test_the_low_memory_mode_fits_a_48_gb_card() -> None:
    from ltx_trainer.model.low_memory import LORA_BYTES_PER_PARAM_8BIT

    card = plan(parse_spec(SPEC), gpu="l40s")
    assert card.gpu_memory_gib == 48
    assert card.checkpointed_blocks is None  # bf16 base weights: not even fully checkpointed
    blocks = card.fewest_checkpointed(low_memory=True)
    assert blocks is not None and card.peak(blocks, True) <= (48 - RESERVE_GIB) * GIB
    # int8 blocks: about half the transformer's bf16 bytes saved (97.7 % of it is blocks)
    assert 0.45 * card.transformer_params * 2 < card.int8_saving < 0.5 * card.transformer_params * 2
    assert card.lora_state(True) == round(card.lora_params * LORA_BYTES_PER_PARAM_8BIT)
    assert card.summary()["lowMemory"]["checkpointedBlocks"] == blocks
    row = next(line for line in table([card]).splitlines()
               if line.startswith("low memory (--low-memory): frozen weights"))
    assert f"{card.frozen(True) / GIB:,.1f} GiB" in row


def test_a_release_file_plans_with_its_release(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from ltx_trainer.training.memory import model_shapes

    transformer, single = tmp_path / "t.safetensors", tmp_path / "s.safetensors"
    save_file({"model.diffusion_model.proj_in.weight": torch.zeros(1)}, transformer)
    save_file({"model.diffusion_model.proj_in.weight": torch.zeros(1),
               "vae.encoder.conv_in.weight": torch.zeros(1)}, single)
    assert model_shapes(transformer).name == model_shapes("ltx-2.5").name == "ltx-2.5"
    assert model_shapes(single).name == "ltx-2.3"


# -- the frozen base sharded over a node's GPUs -----------------------------------------

def test_two_48_gb_cards_sharded_train_the_defaults() -> None:
    """What one 80 GB card holds whole, two L40S hold sharded: half the transformer and of
    the LoRA's state each, plus what is gathered while the step runs."""
    from ltx_trainer.training.memory import GATHERED_BLOCKS, shard_plan

    card = plan(parse_spec(SPEC), gpu="l40s")
    assert card.checkpointed_blocks is None  # one card with a bf16 base: it does not fit
    two = shard_plan(card, gpus=2)
    # the transformer's parameters are its 48 blocks and what is outside them
    assert two.root_params + 48 * two.block_params == card.transformer_params
    assert 0 < two.root_params < 0.05 * card.transformer_params
    parts = two.frozen_parts()
    assert parts["shard"] == card.transformer_params  # bf16 bytes / 2 GPUs
    assert parts["connectors"] == card.connector_params * 2  # kept whole
    lora_block = card.cost.lora_per_block
    assert parts["gathered"] == (two.root_params + GATHERED_BLOCKS * (
        two.block_params + lora_block)) * 2 + lora_block * 4
    assert two.frozen() < 0.65 * card.frozen_bytes
    assert two.lora_state() == card.lora_bytes // 2
    assert two.peak(48) - two.frozen() - two.lora_state() == card.activations(48)
    blocks = two.fewest_checkpointed()
    budget = (48 - RESERVE_GIB) * GIB
    assert blocks is not None and two.peak(blocks) <= budget < two.peak(blocks - 1)
    # more GPUs, less on each; every GPU receives the other shards in both passes
    assert shard_plan(card, gpus=4).frozen() < two.frozen()
    transformer_bytes = card.transformer_params * 2
    assert 0.5 * transformer_bytes < two.gathered_per_step < transformer_bytes
    summary = two.summary()
    assert summary["fits"] and summary["checkpointedBlocks"] == blocks
    assert summary["plannedPeakGiB"] == two.peak(blocks) / GIB
    rows = table([card], sharded=[two]).splitlines()
    below = rows[next(i for i, r in enumerate(rows) if r.startswith("sharded base")):]
    assert below[0].split()[-1] == "2"
    fewest = next(r for r in below if r.startswith("  fewest checkpointed blocks for 48 GiB"))
    assert fewest.endswith(f"{blocks} of 48")
    with pytest.raises(ValueError, match="2 to 8 GPUs of a node, not 1"):
        shard_plan(card, gpus=1)


def test_command_plans_the_sharded_base(spec_file: Path, tiny_model: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    from ltx_trainer.training.memory import shard_plan

    assert _run(str(spec_file), "--model", str(tiny_model), "--shard-base", "2",
                "--markdown") == 0
    markdown = capsys.readouterr().out.splitlines()
    assert any(line.startswith("| sharded base (--shard-base): GPUs of the node | 2 |")
               for line in markdown)
    # without a count: the spec's gpus
    with_gpus = tmp_path / "four.yaml"
    with_gpus.write_text(yaml.safe_dump({**SPEC, "resolution": "low", "gpus": 4}))
    assert _run(str(with_gpus), "--model", str(tiny_model), "--shard-base", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    expected = shard_plan(plan(parse_spec({**SPEC, "resolution": "low", "gpus": 4}),
                               tiny_model), tiny_model, 4)
    assert summary["shardedBase"] == expected.summary() and summary["shardedBase"]["gpus"] == 4
    # a spec without gpus needs the count
    assert _run(str(spec_file), "--model", str(tiny_model), "--shard-base") == 3
    assert "give the count (--shard-base 2)" in capsys.readouterr().err
    assert _run(str(spec_file), "--model", str(tiny_model), "--shard-base", "9") == 3
    assert "--shard-base: the base is sharded over the 2 to 8 GPUs" in capsys.readouterr().err
