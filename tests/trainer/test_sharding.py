"""The frozen base sharded over two ranks with FSDP2 (gloo, CPU): the same LoRA as one
process that accumulates the same samples, half the frozen weights per rank, whole LoRA
states in and out, gradient checkpointing on top, the two-node (HSDP) mesh, and LTX-2.3's
real widths. Both ranks start once (`torch.multiprocessing.spawn`) and run every case;
the test process trains the one-process reference and checks what they wrote."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx_contract.outcomes import InvalidInput
from ltx_contract.spec import parse_spec
from ltx_contract.suffix import SuffixWindow

CPU = torch.device("cpu")
WORLD, STEPS, SEED = 2, 2, 7
FRAMES, FPS = 17, 24  # three latent frames; the suffix keeps the last 8 pixel frames
SUFFIX = SuffixWindow(FRAMES, FPS, 8)
TEXT_TOKENS = 16
#: fp32 on both sides; what differs is only the order of the sums (FSDP's reduce-scatter
#: against one accumulated backward), ~1e-7 relative. A gradient that is not averaged
#: over the ranks (or a rank left out) moves the LoRA by ~1e-3
ATOL, RTOL = 2e-6, 1e-5
KEY = "transformer_blocks.0.attn1.to_q.lora_B.weight"  # a weight every step moves


def _spec() -> Any:
    return parse_spec({"trainingDataUrl": "https://example.com/c.zip", "numberOfSteps": 100,
                       "numberOfFrames": FRAMES, "rank": 8, "learningRate": 1e-2,
                       "withAudio": True})


@dataclass
class Run:
    """A transformer with the trainer's LoRA, its optimizer and the step's inputs."""

    transformer: Any
    connectors: Any
    strategy: Any
    profile: Any
    optimizer: torch.optim.Optimizer

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def loss(self, sample: dict[str, torch.Tensor], draw: int) -> torch.Tensor:
        from ltx_trainer.model.forward import predict
        from ltx_trainer.training.trainer import step_generator

        inputs = self.strategy.prepare(sample, SUFFIX, step_generator(SEED, draw))
        video, audio = predict(self.transformer, self.profile, inputs.video.state,
                               inputs.audio.state, sample["context"], inputs.geometry,
                               isolate=False)
        return self.strategy.loss({"video": video, "audio": audio}, inputs)["total"]


def _run(model: Path, *, shard: bool, checkpointed: int = 0, lora_seed: int = SEED,
         dtype: torch.dtype | None = None) -> Run:
    """The trainer's order: LoRA, fp32 LoRA weights, checkpointing, sharding, optimizer."""
    from diffusers.training_utils import cast_training_params

    from ltx_trainer.model.adapter import add_lora
    from ltx_trainer.model.loader import FolderModel, WithDtype
    from ltx_trainer.training.sharding import shard_frozen_base
    from ltx_trainer.training.speed import checkpoint_blocks
    from ltx_trainer.training.strategy import SuffixStrategy

    parts = WithDtype(FolderModel(model), dtype) if dtype else FolderModel(model)
    transformer = parts.load("transformer", CPU)
    spec = _spec()
    strategy = SuffixStrategy.for_training(spec, parts.profile,
                                           transformer.config.audio_in_channels)
    torch.manual_seed(lora_seed)
    add_lora(transformer, spec.rank, strategy.modalities)
    cast_training_params(transformer, dtype=torch.float32)
    checkpoint_blocks(transformer, checkpointed)
    if shard:
        shard_frozen_base(transformer, CPU)
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate)
    return Run(transformer, parts.load("connectors", CPU), strategy, parts.profile, optimizer)


def _samples(run: Run, count: int) -> list[dict[str, torch.Tensor]]:
    """Seeded cached samples: video and audio latents and a caption's connector outputs."""
    from ltx_trainer.model.forward import connect_text

    config, connectors = run.transformer.config, run.connectors.config
    generator = torch.Generator().manual_seed(SEED)
    samples = []
    for _ in range(count):
        embeds = torch.randn(1, TEXT_TOKENS, connectors.caption_channels
                             * connectors.text_proj_in_factor, generator=generator)
        with torch.no_grad():
            context = connect_text(run.connectors, embeds, torch.ones(1, TEXT_TOKENS))
        samples.append({
            "video": torch.randn(config.in_channels, 3, 2, 2, generator=generator),
            "audio": torch.randn(SUFFIX.audio_latent_frames, config.audio_in_channels,
                                 generator=generator),
            "context": context})
    return samples


def _train(run: Run, samples: list[dict], ranks: list[int], steps: Any = range(STEPS)
           ) -> None:
    """Optimizer steps; step s trains samples (WORLD·s + r for r in `ranks`, modulo the
    samples), their mean loss's gradient clipped as the trainer clips it."""
    from ltx_trainer.training.sharding import clip_gradients

    for step in steps:
        run.optimizer.zero_grad(set_to_none=True)
        for rank in ranks:
            index = (WORLD * step + rank) % len(samples)
            (run.loss(samples[index], index) / len(ranks)).backward()
        clip_gradients(run.params, 1.0)
        run.optimizer.step()


def _frozen_block_numel(run: Run) -> tuple[int, int]:
    """(elements this rank holds, elements in all) of the blocks' frozen weights."""
    from ltx_trainer.training.sharding import local_numel

    frozen = [p for p in run.transformer.transformer_blocks.parameters() if not p.requires_grad]
    return local_numel(frozen), sum(p.numel() for p in frozen)


def _rank(rank: int, model: str, real_widths: str, out: str) -> None:
    """One rank: every case in turn, its results saved for the test process."""
    import torch.distributed as dist

    from ltx_trainer.training.sharding import (
        full_lora_state,
        full_optimizer_state,
        load_lora_state,
        load_optimizer_state,
    )

    os.environ["LOCAL_WORLD_SIZE"] = str(WORLD)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORLD))  # the ranks share the cores
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank,
                            world_size=WORLD)
    results: dict[str, Any] = {}
    run = _run(Path(model), shard=True)
    samples = _samples(run, WORLD * STEPS)
    results["frozen_block_numel"] = _frozen_block_numel(run)
    _train(run, samples, [rank])
    results["sharded"] = trained = full_lora_state(run.transformer)
    results["optimizer"] = moments = full_optimizer_state(run.transformer, run.optimizer)
    with torch.no_grad():
        results["loss_trained"] = run.loss(samples[0], 99).item()
    # whole states into another sharded model (whose own LoRA started elsewhere)
    fresh = _run(Path(model), shard=True, lora_seed=SEED + 1)
    load_lora_state(fresh.transformer, trained)
    load_optimizer_state(fresh.transformer, fresh.optimizer, moments)
    results["reloaded"] = full_lora_state(fresh.transformer)
    with torch.no_grad():
        results["loss_reloaded"] = fresh.loss(samples[0], 99).item()
    # and both take a third step: resumed, the run goes on as it would have
    for each in (run, fresh):
        _train(each, samples, [rank], steps=[STEPS])
    results["third_step"] = full_lora_state(run.transformer)
    results["third_step_resumed"] = full_lora_state(fresh.transformer)
    del run, fresh
    # the checkpointed blocks' forwards run again in the backward, under FSDP
    run = _run(Path(model), shard=True, checkpointed=2)
    _train(run, samples, [rank])
    results["checkpointed"] = full_lora_state(run.transformer)
    # two one-rank nodes: replicated over the nodes, sharded (over one rank) within each
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    run = _run(Path(model), shard=True)
    results["hsdp_mesh"] = run.params[0].device_mesh.mesh_dim_names
    results["hsdp_frozen_block_numel"] = _frozen_block_numel(run)
    _train(run, samples, [rank])
    results["hsdp"] = full_lora_state(run.transformer)
    os.environ["LOCAL_WORLD_SIZE"] = str(WORLD)
    # a bf16 base: its blocks compute in bf16, on the caller's fp32 timesteps and positions
    run = _run(Path(model), shard=True, dtype=torch.bfloat16)
    results["bf16_loss"] = _bf16_loss(run)
    del run
    results.update(_real_widths_step(rank, real_widths))
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _bf16_loss(run: Run) -> float:
    """A trained LoRA's loss on a sample, the base in bf16 (under autocast, as on a GPU)."""
    from ltx_trainer.training.sharding import load_lora_state

    state = {k: torch.randn(v, generator=torch.Generator().manual_seed(i)) * 0.1
             for i, (k, v) in enumerate(_lora_shapes(run).items())}
    load_lora_state(run.transformer, state)
    with torch.no_grad():
        return run.loss(_samples(run, 1)[0], 0).item()


def _lora_shapes(run: Run) -> dict[str, torch.Size]:
    from peft import get_peft_model_state_dict

    return {k: v.shape for k, v in get_peft_model_state_dict(run.transformer).items()}


def _real_widths_step(rank: int, model: str) -> dict[str, Any]:
    """LTX-2.3 at its real widths (one block, random bf16 weights), sharded: one step."""
    from diffusers.training_utils import cast_training_params

    from ltx_trainer.model.adapter import add_lora
    from ltx_trainer.model.forward import TextContext, predict
    from ltx_trainer.model.profile import profile_from_shapes
    from ltx_trainer.model.shapes import ModelShapes, build_component
    from ltx_trainer.training.sharding import clip_gradients, local_numel, shard_frozen_base
    from ltx_trainer.training.strategy import SuffixStrategy
    from ltx_trainer.training.trainer import step_generator

    shapes = ModelShapes.from_json(model)
    transformer = build_component(shapes, "transformer", CPU, torch.bfloat16, seed=0)
    strategy = SuffixStrategy(("video", "audio"), _shift(shapes),
                              transformer.config.audio_in_channels)
    torch.manual_seed(SEED)
    add_lora(transformer, 8, strategy.modalities)
    cast_training_params(transformer, dtype=torch.float32)
    shard_frozen_base(transformer, CPU)
    frozen = [p for p in transformer.parameters() if not p.requires_grad]
    params = [p for p in transformer.parameters() if p.requires_grad]
    lora_before = [p.to_local().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    generator = torch.Generator().manual_seed(rank)
    config = transformer.config
    sample = {"video": torch.randn(config.in_channels, 3, 2, 2, generator=generator),
              "audio": torch.randn(SUFFIX.audio_latent_frames, config.audio_in_channels,
                                   generator=generator)}
    context = TextContext(  # the connectors' outputs at the streams' widths
        torch.randn(1, TEXT_TOKENS, config.num_attention_heads * config.attention_head_dim,
                    generator=generator, dtype=torch.bfloat16),
        torch.randn(1, TEXT_TOKENS, config.audio_num_attention_heads
                    * config.audio_attention_head_dim, generator=generator,
                    dtype=torch.bfloat16),
        torch.ones(1, TEXT_TOKENS, dtype=torch.long))
    inputs = strategy.prepare(sample, SUFFIX, step_generator(SEED, rank))
    video, audio = predict(transformer, profile_from_shapes(shapes), inputs.video.state,
                           inputs.audio.state, context, inputs.geometry, isolate=False)
    loss = strategy.loss({"video": video, "audio": audio}, inputs)["total"]
    loss.backward()
    norm = clip_gradients(params, 1.0)
    optimizer.step()
    moved = sum(int(not torch.equal(p.to_local(), b)) for p, b in zip(params, lora_before,
                                                                      strict=True))
    return {"real_loss": loss.item(), "real_norm": norm.item(), "real_moved": moved,
            "real_lora_tensors": len(params),
            "real_frozen_numel": (local_numel(frozen), sum(p.numel() for p in frozen))}


def _shift(shapes: Any) -> Any:
    from ltx_trainer.model.profile import profile_from_shapes
    from ltx_trainer.training.timesteps import ShiftedLogitNormal

    return ShiftedLogitNormal(profile_from_shapes(shapes).shift)


@pytest.fixture(scope="module")
def ranks(tiny_model_v23: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each of the two ranks saved."""
    import torch.multiprocessing as mp

    from ltx_trainer.model.shapes import real_shapes

    out = tmp_path_factory.mktemp("sharding")
    mp.spawn(_rank, args=(str(tiny_model_v23), real_shapes("ltx-2.3").to_json(), str(out)),
             nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference(tiny_model_v23: Path) -> dict[str, torch.Tensor]:
    """One unsharded process taking the same steps, each on the same two samples."""
    from ltx_trainer.training.lora import adapter_state

    run = _run(tiny_model_v23, shard=False)
    before = adapter_state(run.transformer)
    _train(run, _samples(run, WORLD * STEPS), list(range(WORLD)))
    after = adapter_state(run.transformer)
    assert any(not torch.equal(before[k], after[k]) for k in after)  # it did train
    return after


@pytest.fixture(scope="module")
def one_rank_alone(tiny_model_v23: Path) -> dict[str, torch.Tensor]:
    """The same steps on rank 0's samples only."""
    from ltx_trainer.training.lora import adapter_state

    run = _run(tiny_model_v23, shard=False)
    _train(run, _samples(run, WORLD * STEPS), [0])
    return adapter_state(run.transformer)


def _assert_same(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        assert state[name].device == CPU and state[name].shape == value.shape, name
        torch.testing.assert_close(state[name], value, atol=ATOL, rtol=RTOL, msg=name)


def test_two_sharded_ranks_train_the_one_process_lora(ranks: list[dict], reference: dict,
                                                      one_rank_alone: dict) -> None:
    # both ranks hold the same whole state: the one process's, to summation order
    for rank in ranks:
        _assert_same(rank["sharded"], reference)
    # what the tolerance tells apart: rank 0's samples alone train another LoRA
    apart = max((one_rank_alone[k] - v).abs().max().item() for k, v in reference.items())
    assert apart > 100 * ATOL


def test_each_rank_holds_half_the_frozen_blocks(ranks: list[dict]) -> None:
    held = [rank["frozen_block_numel"] for rank in ranks]
    total = held[0][1]
    assert total > 0 and all(t == total for _, t in held)
    assert sum(local for local, _ in held) == total  # every weight held once
    for local, _ in held:
        assert 0.45 * total < local < 0.55 * total


def test_whole_lora_states_round_trip(ranks: list[dict], reference: dict,
                                      tiny_model_v23: Path) -> None:
    from ltx_trainer.training.lora import adapter_state
    from ltx_trainer.training.sharding import load_lora_state

    for rank in ranks:
        _assert_same(rank["reloaded"], rank["sharded"])
        # the loaded shards are what the model computes with
        assert rank["loss_reloaded"] == rank["loss_trained"]
    # the two ranks' state resumes a one-process run, and says what it said there
    single = _run(tiny_model_v23, shard=False, lora_seed=SEED + 1)
    load_lora_state(single.transformer, ranks[0]["sharded"])
    _assert_same(adapter_state(single.transformer), reference)
    with pytest.raises(ValueError, match="does not fit the model's adapter: 1 weights missing"):
        load_lora_state(single.transformer, dict(list(reference.items())[1:]))


def test_a_sharded_run_resumes_sharded_and_on_one_process(ranks: list[dict],
                                                           tiny_model_v23: Path) -> None:
    """The LoRA and the optimizer's moments, whole, resume a run at 2 ranks and at 1: the
    third step is the one the run took without stopping."""
    from ltx_trainer.training.lora import adapter_state
    from ltx_trainer.training.sharding import load_lora_state, load_optimizer_state

    for rank in ranks:
        _assert_same(rank["third_step_resumed"], rank["third_step"])
        assert not torch.equal(rank["third_step"][KEY], rank["sharded"][KEY])
    single = _run(tiny_model_v23, shard=False, lora_seed=SEED + 1)
    load_lora_state(single.transformer, ranks[0]["sharded"])
    load_optimizer_state(single.transformer, single.optimizer, ranks[0]["optimizer"])
    _train(single, _samples(single, WORLD * STEPS), list(range(WORLD)), steps=[STEPS])
    _assert_same(adapter_state(single.transformer), ranks[0]["third_step"])


def test_checkpointed_blocks_compose_with_sharding(ranks: list[dict], reference: dict) -> None:
    for rank in ranks:
        _assert_same(rank["checkpointed"], reference)


def test_two_nodes_replicate_the_node_shards(ranks: list[dict], reference: dict) -> None:
    for rank in ranks:
        assert rank["hsdp_mesh"] == ("replicate", "shard")
        local, total = rank["hsdp_frozen_block_numel"]
        assert local == total  # one rank per node: each node holds the whole base
        _assert_same(rank["hsdp"], reference)


def test_a_bf16_base_computes_as_unsharded(ranks: list[dict], tiny_model_v23: Path) -> None:
    """Each block computes in the base's bf16 as autocast does unsharded; the inputs keep
    their dtype (cast to bf16 with the weights, the timesteps and positions would move
    the loss by ~1e-3 of itself)."""
    expected = _bf16_loss(_run(tiny_model_v23, shard=False, dtype=torch.bfloat16))
    for rank in ranks:
        assert rank["bf16_loss"] == pytest.approx(expected, rel=1e-5)


def test_real_widths_shard_and_train_a_step(ranks: list[dict]) -> None:
    total = ranks[0]["real_frozen_numel"][1]
    assert total > 800e6  # LTX-2.3's widths: the block and all that is outside the blocks
    assert sum(rank["real_frozen_numel"][0] for rank in ranks) == total
    for rank in ranks:
        assert 0.45 * total < rank["real_frozen_numel"][0] < 0.55 * total
        assert torch.isfinite(torch.tensor(rank["real_loss"])) and rank["real_norm"] > 0
        assert rank["real_norm"] == pytest.approx(ranks[0]["real_norm"], rel=1e-6)
        assert rank["real_moved"] == rank["real_lora_tensors"] > 0


def test_the_low_memory_mode_is_refused(tiny_model_v23: Path) -> None:
    from ltx_trainer.model.low_memory import quantize_frozen
    from ltx_trainer.training.sharding import check_combination, shard_frozen_base

    with pytest.raises(InvalidInput, match="cannot be combined with the low-memory mode"):
        check_combination(shard_base=True, low_memory=True)
    check_combination(shard_base=True, low_memory=False)
    run = _run(tiny_model_v23, shard=False)
    quantize_frozen(run.transformer)
    with pytest.raises(InvalidInput, match="some of its weights are quantized"):
        shard_frozen_base(run.transformer, CPU)


def test_the_trainer_checkpoints_the_sharded_plans_blocks() -> None:
    """With the base sharded, a GPU checkpoints the fewest blocks the sharded plan fits."""
    from ltx_trainer.model.shapes import LTX_2_3
    from ltx_trainer.training.memory import plan, shard_plan
    from ltx_trainer.training.sharding import planned_checkpointing

    spec = parse_spec({"trainingDataUrl": "https://example.com/c.zip"})
    expected = shard_plan(plan(spec, LTX_2_3, 48), LTX_2_3, 2).fewest_checkpointed()
    assert expected is not None and 0 < expected < 48
    assert planned_checkpointing(LTX_2_3, spec, 1024, 48, gpus=2) == expected
    assert planned_checkpointing(LTX_2_3, spec, 1024, 80, gpus=2) < expected
    assert planned_checkpointing(LTX_2_3, spec, 1024, None, gpus=2) == 0  # off a GPU
