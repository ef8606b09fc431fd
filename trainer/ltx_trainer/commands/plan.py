"""`ltx-extend plan`: the memory and time of one training step for each spec, on the
model's real shapes measured on the meta device (`training/memory.py`), as a table,
Markdown or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from ltx_contract.outcomes import ExitCode

from ..spec_file import read_spec_or_report
from ..training.memory import (
    GIB,
    GPUS,
    MemoryPlan,
    ShardedMemoryPlan,
    model_shapes,
    plan,
    shard_plan,
)
from .options import local_path


def add_parser(subparsers: Any) -> None:
    """`ltx-extend plan SPEC…`."""
    parser = subparsers.add_parser(
        "plan",
        help="compute the GPU memory and time of one training step for a spec",
        description="Measure one training step of SPEC on the model's real shapes (built on "
        "the meta device: no memory, no GPU): frozen weights, LoRA and optimizer state, "
        "activations with and without gradient checkpointing, peak, FLOPs per step and the "
        "predicted seconds per step at a stated utilisation of the GPU's dense bf16 peak.")
    parser.add_argument("specs", nargs="+", type=local_path, metavar="SPEC",
                        help="resource or request files; one column each")
    parser.add_argument("--model", default="ltx-2.3",
                        help="a release (ltx-2.5, ltx-2.3, ltx-2.0), a diffusers model folder, "
                        "a single-file checkpoint or an LTX-2.5 transformer file (default "
                        "ltx-2.3)")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    parser.add_argument("--gpu-memory", type=float, help="GiB of GPU memory (default: the GPU's)")
    parser.add_argument("--utilisation", type=float, default=0.4,
                        help="fraction of the dense bf16 peak reached (default 0.4)")
    parser.add_argument("--with-variants", action="store_true",
                        help="also plan the first spec with audio, and at high resolution "
                        "with 121 frames")
    parser.add_argument("--shard-base", type=int, nargs="?", const=0, metavar="G",
                        help="also plan each step with the frozen base sharded over G GPUs "
                        "of a node (FSDP2, the trainer's --shard-base); without G, over "
                        "each spec's gpus")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per spec")
    output.add_argument("--markdown", action="store_true", help="the table in Markdown")
    parser.set_defaults(func=run)


def variants(spec: Any) -> list[Any]:
    """The spec with audio on, and at high resolution with 121 frames."""
    from ltx_contract.spec import parse_spec

    body = json.loads(spec.to_json())
    return [parse_spec({**body, "withAudio": True}),
            parse_spec({**body, "resolution": "high", "numberOfFrames": 121})]


def run(args: argparse.Namespace) -> int:
    specs = [read_spec_or_report(path) for path in args.specs]
    if any(spec is None for spec in specs):
        return ExitCode.INVALID_INPUT
    if not 0 < args.utilisation <= 1:
        print("--utilisation must be in (0, 1]", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    if args.with_variants:
        specs += variants(specs[0])
    try:
        shapes = model_shapes(args.model)
        plans = [plan(spec, shapes, args.gpu_memory, args.gpu, args.utilisation)
                 for spec in specs]
    except (ValueError, FileNotFoundError) as exc:
        print(f"--model {args.model}: {exc}", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    sharded = None
    if args.shard_base is not None:
        try:
            sharded = [shard_plan(p, shapes, args.shard_base or _spec_gpus(spec))
                       for p, spec in zip(plans, specs, strict=True)]
        except ValueError as exc:
            print(f"--shard-base: {exc}", file=sys.stderr)
            return ExitCode.INVALID_INPUT
    if args.json:
        for i, p in enumerate(plans):
            extra = {"shardedBase": sharded[i].summary()} if sharded else {}
            print(json.dumps({**p.summary(), "cost": asdict(p.cost), **extra}))
    else:
        print(table(plans, markdown=args.markdown, sharded=sharded))
    return ExitCode.SUCCESS


def _spec_gpus(spec: Any) -> int:
    if not spec.gpus or spec.gpus < 2:
        raise ValueError(f"without a count the base is sharded over the spec's gpus, and it "
                         f"asks for {spec.gpus or 'the default'}: give the count "
                         "(--shard-base 2) or set gpus")
    return spec.gpus


# -- the table --------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def table(plans: list[MemoryPlan], markdown: bool = False,
          sharded: list[ShardedMemoryPlan] | None = None) -> str:
    """The plans side by side, one column each (aligned text, or a Markdown table), with
    the rows of the base sharded when `sharded` gives each column's."""
    first = plans[0]

    def row(label: str, cell: Any) -> list[str]:
        return [label, *(cell(p) for p in plans)]

    def fewest(p: MemoryPlan, low_memory: bool = False) -> str:
        k = p.fewest_checkpointed(low_memory)
        return "does not fit" if k is None else "none" if k == 0 else f"{k} of {p.depth}"

    def low_peak(p: MemoryPlan) -> str:
        k = p.fewest_checkpointed(True)
        return _gib(p.peak(p.depth if k is None else k, True))

    def both(cell: Any) -> Any:  # every block checkpointed / the plan's blocks
        return lambda p: f"{cell(p, p.depth)} / {cell(p, p.planned_blocks)}"

    rows = [
        row("", lambda p: p.step.label),
        row("tokens: video / audio / text", lambda p: f"{p.step.video_tokens:,} / "
            f"{p.step.audio_frames:,} / {p.step.text_tokens:,}"),
        row("frozen weights, bf16", lambda p: _gib(p.frozen_bytes)),
        row(f"LoRA rank {first.step.rank}: parameters", lambda p: f"{p.lora_params / 1e6:,.1f} M"),
        row("LoRA + grads + AdamW, fp32", lambda p: _gib(p.lora_bytes)),
        row("activations, no checkpointing", lambda p: _gib(p.activations(0))),
        row("activations, every block checkpointed", lambda p: _gib(p.activations(p.depth))),
        row("peak, no checkpointing", lambda p: _gib(p.peak(0))),
        row("peak, every block checkpointed", lambda p: _gib(p.peak(p.depth))),
        row(f"fewest checkpointed blocks for {first.gpu_memory_gib:g} GiB", fewest),
        row("  its peak", lambda p: _gib(p.peak(p.planned_blocks))),
        row("TFLOPs per step: all / fewest checkpointed",
            both(lambda p, k: f"{p.flops(k) / 1e12:,.0f}")),
        row("text connectors, once per caption (no grad)",
            lambda p: f"{p.connector_flops / 1e12:,.1f}"),
        row(f"seconds per step at {first.utilisation:.0%}: all / fewest",
            both(lambda p, k: f"{p.seconds(k):.2f}")),
        row("low memory (--low-memory): frozen weights, int8 blocks",
            lambda p: _gib(p.frozen(True))),
        row("  LoRA + grads + 8-bit AdamW", lambda p: _gib(p.lora_state(True))),
        row("  peak, every block checkpointed", lambda p: _gib(p.peak(p.depth, True))),
        row(f"  fewest checkpointed blocks for {first.gpu_memory_gib:g} GiB",
            lambda p: fewest(p, True)),
        row("  its peak", low_peak),
    ]
    if sharded:
        rows += _sharded_rows(sharded)
    if markdown:
        cells = [[c.replace("|", "\\|") for c in r] for r in rows]
        cells[0][0] = "per training step"
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    head = (f"{first.model}: transformer {first.transformer_params / 1e9:.2f} B + connectors "
            f"{first.connector_params / 1e9:.2f} B parameters; one step on {first.gpu.name} "
            f"({first.gpu.bf16_flops / 1e12:,.0f} TFLOP/s dense bf16) at "
            f"{first.utilisation:.0%} of peak")
    lines = [head, ""] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                          for r in rows]
    return "\n".join(lines)


def _sharded_rows(sharded: list[ShardedMemoryPlan]) -> list[list[str]]:
    first = sharded[0].plan

    def row(label: str, cell: Any) -> list[str]:
        return [label, *(cell(s) for s in sharded)]

    def fewest(s: ShardedMemoryPlan) -> str:
        k = s.fewest_checkpointed()
        return "does not fit" if k is None else "none" if k == 0 else f"{k} of {s.plan.depth}"

    def parts(s: ShardedMemoryPlan) -> str:
        return " / ".join(_gib(n) for n in s.frozen_parts().values())

    return [
        row("sharded base (--shard-base): GPUs of the node", lambda s: str(s.gpus)),
        row("  frozen weights per GPU", lambda s: _gib(s.frozen())),
        row("    shard / gathered (root + 2 blocks) / connectors", parts),
        row("  LoRA + grads + AdamW per GPU", lambda s: _gib(s.lora_state())),
        row("  peak, every block checkpointed", lambda s: _gib(s.peak(s.plan.depth))),
        row(f"  fewest checkpointed blocks for {first.gpu_memory_gib:g} GiB", fewest),
        row("  its peak", lambda s: _gib(s.peak(s.blocks_to_checkpoint()))),
        row(f"  seconds per step at {first.utilisation:.0%}, compute only",
            lambda s: f"{s.plan.seconds(s.blocks_to_checkpoint()):.2f}"),
        row("  all-gathered per step per GPU", lambda s: _gib(s.gathered_per_step)),
    ]
