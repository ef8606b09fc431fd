"""`ltx-extend`: the user's command line.

Subcommands import what they need when they run, so `ltx-extend validate` and
`ltx-extend crd` start without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ltx_contract.outcomes import ExitCode

from . import __version__, plan
from .model import writer
from .model.source import MODEL_CACHE_ENV
from .spec_file import read_spec_or_report


def local_path(text: str) -> Path:
    """A command-line path: plain (relative or absolute) or a file:// URL."""
    if text.startswith("file:"):
        from .store import file_url_path

        try:
            return file_url_path(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a local path or file:// URL")
    return Path(text)


def _run_argument(text: str) -> str:
    from .store import check_run

    try:
        return check_run(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _processes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--processes must be a whole number of 1 or more, "
                                         f"not {text!r}")
    return value


def _describe_valid(label: str, spec: Any) -> list[str]:
    from ltx_contract.billing import billable_units, cost

    units = billable_units(spec.number_of_steps, succeeded=True)
    width, height = spec.frame_size
    lines = [
        f"{label}: valid",
        f"  {spec.number_of_steps} steps at rank {spec.rank}, "
        f"{spec.number_of_frames} frames at {spec.frame_rate} fps, {width}×{height}, "
        f"suffix {spec.conditioning_frames} frames ({spec.suffix_latent_frames} latent), "
        f"audio {'on' if spec.with_audio else 'off'}, "
        f"{len(spec.validation)} validation sample(s)",
    ]
    for field, (requested, used) in spec.snapped().items():
        lines.append(f"  {field} {requested} is snapped down to {used} (8k+1 frames)")
    lines.append(f"  bills {units} units (${cost(units)}) if it succeeds, 0 if it fails")
    return lines


def cmd_validate(args: argparse.Namespace) -> int:
    from ltx_contract.resource import KIND
    from ltx_contract.spec import SpecError

    from .spec_file import DocumentError, is_resource, read_documents, spec_of

    worst = ExitCode.SUCCESS
    for path in args.files:
        try:
            documents = read_documents(path)
        except DocumentError as exc:
            print(exc, file=sys.stderr)
            worst = ExitCode.INVALID_INPUT
            continue
        if not documents:
            print(f"{path}: holds no document", file=sys.stderr)
            worst = ExitCode.INVALID_INPUT
        for doc in documents:
            resource = is_resource(doc)
            where = f"{KIND}/{(doc.get('metadata') or {}).get('name')}" if resource else (
                "request")
            try:
                spec = spec_of(doc)
            except SpecError as exc:
                print(f"{path}: {where} is invalid:", file=sys.stderr)
                for problem in exc.problems:
                    print(f"  - {problem}", file=sys.stderr)
                worst = ExitCode.INVALID_INPUT
                continue
            print("\n".join(_describe_valid(f"{path}: {where}", spec)))
    return worst


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")


def cmd_prepare(args: argparse.Namespace) -> int:
    from ltx_contract.manifest import Manifest
    from ltx_contract.outcomes import Outcome

    from .dataset import FetchPolicy, PrepareSettings, prepare_dataset

    _setup_logging()
    spec = read_spec_or_report(args.spec)
    if spec is None:
        return ExitCode.INVALID_INPUT
    policy = FetchPolicy(allow_file_urls=True,
                         allow_private_networks=args.allow_private_networks)
    try:
        prepare_dataset(spec, args.work, PrepareSettings(fetch=policy))
    except Outcome as exc:
        print(f"prepare failed ({exc.reason}): {exc.message}", file=sys.stderr)
        return exc.exit_code
    dataset = args.work / "dataset"
    manifest = Manifest.read(dataset)
    print(f"prepared {len(manifest.samples)} sample(s) of {manifest.frames} frames at "
          f"{manifest.frame_rate} fps, {manifest.width}×{manifest.height}"
          f"{', with audio' if manifest.with_audio else ''}; "
          f"{len(manifest.validation)} validation clip(s)")
    for warning in manifest.warnings:
        print(f"  warning: {warning}")
    print(f"dataset: {dataset}\nmanifest: {dataset / 'manifest.json'}")
    if spec.debug_dataset:
        print(f"debug archive: {args.work / 'debug_dataset.zip'}")
    return ExitCode.SUCCESS


def cmd_sample_data(args: argparse.Namespace) -> int:
    import yaml

    from ltx_contract.resource import API_VERSION, KIND

    from .sample_data import write_closing_clip, write_sample_dataset

    archive = write_sample_dataset(args.dest).resolve()
    closing = write_closing_clip(args.dest).resolve()
    spec_path = args.dest / "sample-training.yaml"
    resource = {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "sample-lead-in"},
        "spec": {"trainingDataUrl": archive.as_uri(), "triggerPhrase": "LEADIN",
                 "numberOfSteps": 100, "numberOfFrames": 25, "resolution": "low",
                 "withAudio": True, "debugDataset": True,
                 "validation": [{"prompt": "LEADIN a square glides in",
                                 "videoUrl": closing.as_uri()}],
                 "validationNumberOfFrames": 25, "validationResolution": "low"},
    }
    spec_path.write_text(yaml.safe_dump(resource, sort_keys=False), encoding="utf-8")
    print(f"wrote {archive}\nwrote {closing}\nwrote {spec_path}")
    return ExitCode.SUCCESS


def cmd_extend(args: argparse.Namespace) -> int:
    from ltx_contract.outcomes import Outcome
    from ltx_contract.rules import snap_frames
    from ltx_contract.spec import DEFAULT_NEGATIVE_PROMPT, FRAME_SIZES

    from .model.loader import default_device
    from .model.source import resolve_model
    from .preview.extend import ExtendRequest, extend_clip

    _setup_logging()
    if (args.resolution, args.aspect) not in FRAME_SIZES:
        print("--resolution must be low, medium or high and --aspect 16:9, 1:1 or 9:16",
              file=sys.stderr)
        return ExitCode.INVALID_INPUT
    request = ExtendRequest(
        model=args.model, text_encoder=args.text_encoder, video_vae=args.video_vae,
        audio_vae=args.audio_vae, lora=args.lora, clip=args.clip,
        prompt=args.prompt, output=args.output, frames=snap_frames(args.frames), fps=args.fps,
        resolution=args.resolution, aspect=args.aspect, audio=args.audio,
        conditioning_frames=args.conditioning_frames,
        negative_prompt=args.negative_prompt or DEFAULT_NEGATIVE_PROMPT, steps=args.steps,
        stg_scale=args.stg_scale, seed=args.seed, decoded_ending=args.decoded_ending)
    try:
        path = extend_clip(request, default_device(), resolve_model)
    except (Outcome, ValueError, FileNotFoundError) as exc:
        print(f"extend failed: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    print(f"wrote {path}")
    return ExitCode.SUCCESS


def _train_settings(args: argparse.Namespace) -> Any:
    import os

    from .training.settings import TrainSettings

    platform = {"shard_base": True} if os.environ.get("LTX_EXTEND_SHARD_BASE") == "1" else {}
    return TrainSettings.from_options(vars(args), **platform)  # the operator's setting


def _with_checkpoint(args: argparse.Namespace, spec: Any) -> Any:
    """The spec with `--model FILE --text-encoder DIR` as its `model` (a local run takes a
    single-file checkpoint through the spec; a local or file:// one is used in place and
    checked here first, before any work); `args.model` is then cleared. Folders are left
    to the run."""
    from ltx_contract.outcomes import InvalidInput
    from ltx_contract.spec import ModelSource

    from .model.choice import ModelChoice
    from .model.source import STORE_SCHEMES, is_checkpoint
    from .model.split_pack import is_split_transformer

    parts = {"text_encoder": args.text_encoder, "video_vae": getattr(args, "video_vae", None),
             "audio_vae": getattr(args, "audio_vae", None)}
    if args.model and any(parts.values()) and not is_checkpoint(args.model):
        raise InvalidInput(f"{args.model} is a model folder, which has its own text encoder "
                           "and VAEs: --text-encoder, --video-vae and --audio-vae go with a "
                           "checkpoint only")
    if spec is None or not args.model or not is_checkpoint(args.model):
        return spec

    def as_url(text: str) -> str:
        return text if text.startswith(STORE_SCHEMES) else local_path(text).absolute().as_uri()

    checkpoint = as_url(args.model)
    local = checkpoint.startswith("file://")
    split = local and local_path(args.model).is_file() and is_split_transformer(
        local_path(args.model))
    if not args.text_encoder and local and not split:
        raise InvalidInput(f"{args.model} holds no text encoder: give its Gemma-3 folder "
                           "with --text-encoder DIR")
    urls = {k: as_url(v) for k, v in parts.items() if v}
    if local and all(u.startswith("file://") for u in urls.values()):
        # all local: checked here, before any work (a URL is checked by the run, first)
        ModelChoice(checkpoint, **urls).resolve(args.model_cache)
    args.model = args.text_encoder = None
    return spec.model_copy(update={"model": ModelSource(url=checkpoint, **urls)})


def model_part_options(p: argparse.ArgumentParser, path: Any) -> None:
    """--video-vae and --audio-vae: LTX-2.5's pack parts, where not beside --model."""
    for flag, what in (("--video-vae", "video VAE file (ltx-2.5-video-vae[-conv]-bf16."
                        "safetensors)"), ("--audio-vae", "audio VAE file "
                                          "(ltx-2.5-audio-vae-bf16.safetensors)")):
        p.add_argument(flag, type=path, metavar="FILE|URL" if path is str else "FILE",
                       help=f"LTX-2.5: the {what}; default: its published name beside "
                       "--model")


def cmd_train(args: argparse.Namespace) -> int:
    from ltx_contract.outcomes import Outcome

    from .local_run import train_locally

    _setup_logging()
    spec = read_spec_or_report(args.spec)
    if (args.text_encoder or args.video_vae or args.audio_vae) and not args.model:
        print("--text-encoder, --video-vae and --audio-vae go with --model FILE (a checkpoint)",
              file=sys.stderr)
        return ExitCode.INVALID_INPUT
    try:
        spec = _with_checkpoint(args, spec)
        settings = _train_settings(args)
    except Outcome as exc:
        print(f"--model {args.model}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except argparse.ArgumentTypeError as exc:
        print(exc, file=sys.stderr)
        return ExitCode.USAGE
    return train_locally(args, spec, settings)


def cmd_job(args: argparse.Namespace) -> int:
    """One stage, as the operator's Jobs run it."""
    import os

    from ltx_contract.result import JobResult
    from ltx_contract.spec import SpecError

    from .dataset import FetchPolicy
    from .progress import ProgressServer, ProgressState
    from .spec_file import read_spec, spec_from_text
    from .stages.context import JobContext
    from .stages.dispatch import run_stage
    from .stages.results import write_result
    from .store import check_run, open_store
    from .training.launch import Ranks
    from .workspace import make_folders

    _setup_logging()
    try:  # a malformed run is refused before anything is read or written
        run = check_run(args.run or os.environ.get("LTX_EXTEND_RUN", ""))
        location = args.store or os.environ.get("LTX_EXTEND_STORE", "")
        store = open_store(location)
        ranks = Ranks.from_env()  # torchrun's PET_* settings: more than one rank launches
    except ValueError as exc:
        print(f"ltx-extend job: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    termination = args.termination_log
    if termination is None:
        default = Path(os.environ.get("LTX_EXTEND_TERMINATION_LOG", "/dev/termination-log"))
        termination = default if default.parent.is_dir() and os.access(default.parent,
                                                                        os.W_OK) else None
    settings = _train_settings(args)
    make_folders()
    raw = args.spec_json or os.environ.get("LTX_EXTEND_SPEC", "")
    state = ProgressState()
    try:
        spec = read_spec(local_path(raw[1:])) if raw.startswith("@") else spec_from_text(raw)
    except (SpecError, argparse.ArgumentTypeError) as exc:
        message = "; ".join(exc.problems) if isinstance(exc, SpecError) else str(exc)
        result = JobResult(stage=args.stage, outcome="Failed", reason="InvalidSpec",
                           message=message, exit_code=int(ExitCode.INVALID_INPUT))
        write_result(JobContext(spec=None, store=store, run=run, work_dir=args.work,
                                termination_log=termination), result)
        print(message, file=sys.stderr)
        return result.exit_code
    ctx = JobContext(
        spec=spec, store=store, run=run, work_dir=args.work, model=args.model,
        text_encoder=args.text_encoder, model_cache=args.model_cache,
        fetch=FetchPolicy(allow_file_urls=args.allow_file_urls,
                          allow_private_networks=args.allow_private_networks),
        termination_log=termination, progress=state, train_settings=settings,
        ranks=ranks if args.stage == "train" else None, progress_port=args.progress_port,
        store_location=location)
    if ctx.in_ranks:  # the main rank serves /progress
        result = run_stage(args.stage, ctx)
    else:
        with ProgressServer(state, args.progress_port):
            result = run_stage(args.stage, ctx)
    print(result.termination_message())
    return result.exit_code


def cmd_crd(args: argparse.Namespace) -> int:
    from ltx_contract.crd import render_crd

    text = render_crd()
    if args.check:
        try:
            current = args.check.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"{args.check}: cannot be read: {exc.strerror}", file=sys.stderr)
            return ExitCode.INTERNAL_ERROR
        if current != text:
            print(f"{args.check} is stale: run `make crd` to regenerate it", file=sys.stderr)
            return ExitCode.INTERNAL_ERROR
        print(f"{args.check} is up to date")
    elif args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return ExitCode.SUCCESS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltx-extend",
        description="Train LTX-2.3 LoRAs that extend video backward in time.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser(
        "validate",
        help="check LtxExtendTraining resources or extend-suffix request JSON",
        description="Check resources (YAML, several documents allowed) or request bodies "
        "(JSON, camelCase or snake_case) against every rule, without a cluster.",
    )
    validate.add_argument("files", nargs="+", type=local_path, metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    crd = sub.add_parser(
        "crd",
        help="print the CustomResourceDefinition generated from the spec model",
    )
    crd_dest = crd.add_mutually_exclusive_group()
    crd_dest.add_argument("-o", "--output", type=local_path, help="write it to this file")
    crd_dest.add_argument(
        "--check", type=local_path, metavar="FILE",
        help="fail if FILE differs from the generated CRD"
    )
    crd.set_defaults(func=cmd_crd)

    prepare = sub.add_parser(
        "prepare",
        help="run the prepare stage locally: fetch, check and fit the dataset",
        description="Fetch the training data and validation clips of SPEC, check them and "
        "fit them into WORK/dataset with a manifest. file:// URLs are allowed.",
    )
    prepare.add_argument("spec", type=local_path, metavar="SPEC")
    prepare.add_argument("--work", type=local_path, required=True, help="work directory")
    prepare.add_argument("--allow-private-networks", action="store_true",
                         help="allow http(s) URLs on loopback or private addresses")
    prepare.set_defaults(func=cmd_prepare)

    sample = sub.add_parser(
        "sample-data",
        help="write a small sample dataset (captioned clips with audio) and a spec for it",
    )
    sample.add_argument("dest", type=local_path, metavar="DIR")
    sample.set_defaults(func=cmd_sample_data)

    writer.add_parser(sub, path=local_path)
    plan.add_parser(sub, path=local_path)

    extend = sub.add_parser(
        "extend",
        help="extend a closing clip backward in time with a trained LoRA",
        description="Generate the lead-in to CLIP: its last conditioning frames are kept and "
        "the frames before them are generated. Writes an H.264 (+AAC) file.",
    )
    extend.add_argument("--model", type=local_path,
                        help="diffusers model folder, LTX-2.3's single-file checkpoint "
                        "(.safetensors, with --text-encoder) or LTX-2.5's transformer file "
                        "(default: the tiny model)")
    extend.add_argument("--text-encoder", type=local_path, metavar="DIR|FILE",
                        help="LTX-2.3: the Gemma-3 folder of the single file; LTX-2.5: the "
                        "text encoder file (default: its published name beside --model)")
    model_part_options(extend, local_path)
    extend.add_argument("--lora", type=local_path, help="the trained LoRA (.safetensors)")
    extend.add_argument("--clip", type=local_path, required=True, help="the closing clip")
    extend.add_argument("--prompt", required=True)
    extend.add_argument("--negative-prompt")
    extend.add_argument("--output", type=local_path, required=True)
    extend.add_argument("--frames", type=int, default=89, help="output frames (8k+1)")
    extend.add_argument("--fps", type=int, default=24)
    extend.add_argument("--resolution", default="high")
    extend.add_argument("--aspect", default="1:1")
    extend.add_argument("--audio", action="store_true", help="extend the audio too")
    extend.add_argument("--conditioning-frames", type=int,
                        help="suffix frames kept (default: the LoRA's)")
    extend.add_argument("--steps", type=int, default=30)
    extend.add_argument("--stg-scale", type=float, default=1.0)
    extend.add_argument("--seed", type=int, default=0)
    extend.add_argument("--decoded-ending", action="store_true",
                        help="end with the model's decode of the closing clip instead of the "
                        "clip's own frames and audio")
    extend.set_defaults(func=cmd_extend)

    def training_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="diffusers model folder, LTX-2.3's single-file "
                       "checkpoint (.safetensors, with --text-encoder) or LTX-2.5's transformer "
                       "file, or the s3:// / file:// store URL of any (downloaded into the model "
                       "cache; a file:// checkpoint is used in place); default: the spec's model")
        p.add_argument("--text-encoder", metavar="DIR|FILE|URL",
                       help="LTX-2.3: the Gemma-3 folder (config, weights, tokenizer) of the "
                       "single file; LTX-2.5: the text encoder file (default: beside --model); "
                       "default: the spec's model.textEncoder")
        p.add_argument("--low-memory", action="store_true", default=None,
                       help="int8 weight-only frozen base weights and an 8-bit optimizer, "
                       "for GPUs of 48 GB (docs/real-model.md)")
        p.add_argument("--model-cache", type=local_path, metavar="DIR",
                       help="where a model given by URL is downloaded, once (env "
                       f"{MODEL_CACHE_ENV}; default WORK/model-cache)")
        p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
        p.add_argument("--preview-every", type=int, help="steps between previews (0: end)")
        p.add_argument("--validation-every", type=int,
                       help="steps between validation losses (0, the default: at each "
                       "checkpoint; always at the last step)")
        p.add_argument("--preview-steps", type=int, help="denoising steps of a preview")
        p.add_argument("--max-sequence-length", type=int, help="text tokens (default 1024)")
        p.add_argument("--seed", type=int)
        p.add_argument("--checkpointed-blocks", type=int, metavar="N",
                       help="checkpoint the first N transformer blocks (default: the fewest "
                       "whose planned peak fits the GPU's memory; none on a CPU)")
        p.add_argument("--attention-backend",
                       choices=("auto", "default", "cudnn", "flash", "efficient", "math"),
                       help="SDPA kernels (default auto: cuDNN, then flash, then "
                       "memory-efficient on a GPU)")
        p.add_argument("--compile-backend", metavar="BACKEND",
                       help="torch.compile the repeated transformer blocks with this backend, "
                       "e.g. inductor (default: not compiled)")
        p.add_argument("--allow-private-networks", action="store_true",
                       help="allow http(s) URLs on loopback or private addresses")
        p.add_argument("--accumulate", type=int, metavar="K",
                       help="samples each rank trains per step, their gradients averaged "
                       "(the global batch is ranks × K; default 1)")
        p.add_argument("--shard-base", action="store_true", default=None,
                       help="shard the frozen base over the node's GPUs with FSDP2 (env "
                       "LTX_EXTEND_SHARD_BASE=1)")
        p.add_argument("--collective-timeout", type=float, metavar="SECONDS",
                       help="how long a rank waits for its peers before the step fails "
                       "(default 600)")

    train = sub.add_parser(
        "train",
        help="train locally: prepare, train, previews and publish in one process",
        description="Run a whole training on this machine. With no --model and no spec.model "
        "the tiny random model is used (written on first use); with no --output, "
        "./ltx-extend-output. Running the same command again continues an interrupted run "
        "from its last checkpoint; a finished run is not trained again.",
    )
    train.add_argument("spec", type=local_path, metavar="SPEC")
    train.add_argument("--output", metavar="DIR|URL",
                       help="a folder (plain path or file://) or an s3:// URL")
    train.add_argument("--work", type=local_path,
                       help="work folder: caches, checkpoints, temporary files "
                       "(default OUTPUT/.work)")
    train.add_argument("--resume", metavar="RUN",
                       help="continue this run folder (local/NAME/ID, as printed) instead of "
                       "the one the spec gives")
    train.add_argument("--progress-port", type=int, help="serve /progress and /metrics")
    train.add_argument("--processes", type=_processes, default=1, metavar="N",
                       help="train with N data-parallel ranks on this machine, through "
                       "torch's elastic launcher (gloo on CPU, NCCL on GPUs; the global "
                       "batch is N)")
    training_options(train)
    model_part_options(train, str)
    train.set_defaults(func=cmd_train)

    job = sub.add_parser(
        "job",
        help="run one stage as the operator's Jobs do (prepare or train)",
        description="Run one stage with the spec as JSON. Exit codes: 0 success, 1 internal "
        "error, 2 usage, 3 invalid input, 4 download failure. The result goes to the store "
        "and the termination log. Every file it writes is under --work or --model-cache. "
        "With torchrun's PET_NPROC_PER_NODE × PET_NNODES above 1, `job train` starts the "
        "ranks through torch's elastic launcher.",
    )
    job.add_argument("stage", choices=["prepare", "train"])
    job.add_argument("--spec-json", help="the spec as JSON, or @FILE (env LTX_EXTEND_SPEC)")
    job.add_argument("--store", help="artifact store: a folder, file:// or s3:// URL (env "
                     "LTX_EXTEND_STORE)")
    job.add_argument("--run", type=_run_argument,
                     help="<namespace>/<name>/<uid> (env LTX_EXTEND_RUN)")
    job.add_argument("--work", type=local_path, default=Path("/tmp/ltx-extend"))
    job.add_argument("--termination-log", type=local_path,
                     help="default /dev/termination-log when writable")
    job.add_argument("--progress-port", type=int, default=8080)
    job.add_argument("--allow-file-urls", action="store_true")
    training_options(job)
    job.set_defaults(func=cmd_job)
    return parser


def _confinement(args: argparse.Namespace) -> Path | None:
    """The work folder `job` and `train` write under (None for other commands); sets
    the defaults of --work and --model-cache that depend on it."""
    import os

    if args.command not in ("job", "train"):
        return None
    if args.work is None:
        from .local_run import default_work

        args.work = default_work(args.output)
    args.work = args.work.absolute()
    if args.model_cache is None:
        args.model_cache = Path(os.environ.get(MODEL_CACHE_ENV) or args.work / "model-cache")
    args.model_cache = args.model_cache.absolute()
    return args.work


#: loggers whose import-time warnings say nothing about a run: torchao's prebuilt kernels
#: for other Pythons and GPUs (the low-memory mode uses none of them), diffusers' note
#: that follows from them, and torch's deprecation notes on torchao's enums
QUIET_LOGGERS = ("torchao", "diffusers.quantizers.torchao.torchao_quantizer",
                 "torch.utils._pytree")


def main(argv: list[str] | None = None) -> int:
    import logging

    from .workspace import confined_to

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    work = _confinement(args)
    if work is None:
        return int(args.func(args))
    with confined_to(work):  # before torch, transformers & co. are imported
        return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
