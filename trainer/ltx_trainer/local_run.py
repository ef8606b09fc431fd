"""`ltx-extend train`: a whole training on this machine, resumable.

The run's folder in the output is derived from what it trains (spec, model, seed), so
running the same command again after a crash continues it from its last checkpoint,
and a run that finished is not trained again: its outputs are printed. `--resume RUN`
names the folder outright. `--processes N` trains with N ranks through the launcher a pod
uses (`training/launch.py`); the prepare stage runs in this process first.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ltx_contract.billing import cost
from ltx_contract.outcomes import ExitCode, InvalidInput
from ltx_contract.result import JobResult
from ltx_contract.spec import TrainingSpec

from .store import Store, check_run, open_store

if TYPE_CHECKING:
    from .training.settings import TrainSettings

log = logging.getLogger(__name__)

DEFAULT_OUTPUT = "ltx-extend-output"
TINY_MODEL_NOTICE = ("using the tiny random model (no --model and no spec.model): it trains "
                     "a LoRA of noise, for trying the pipeline only")
_ARTIFACTS = (("LoRA", "lora_file"), ("best validation step's LoRA", "lora_best"),
              ("config", "config_file"),
              ("validation reel", "video"), ("debug dataset", "debug_dataset"),
              ("loss chart", "loss_chart"), ("loss log", "loss_log"),
              ("validation loss log", "validation_log"), ("TensorBoard logs", "logs"))


def default_work(output: str | None) -> Path:
    """`<output>/.work` for a local output folder; a folder in the system's temporary
    folder for an s3:// one."""
    output = output or DEFAULT_OUTPUT
    if output.startswith("file://"):
        from .store import file_url_path

        try:
            return file_url_path(output) / ".work"
        except ValueError:  # refused, with its reason, when the store is opened
            return Path(tempfile.gettempdir()) / "ltx-extend-work"
    if "://" not in output:
        return Path(output) / ".work"
    return Path(tempfile.gettempdir()) / "ltx-extend-work"


def _resume_key(given: str, store: Store) -> str:
    """A run key from `--resume`: the key itself (`local/NAME/ID`), or the run's folder
    as printed (a path or a URL in the output)."""
    from .store import FileStore, file_url_path

    if isinstance(store, FileStore) and (given.startswith("file:") or "://" not in given):
        try:
            path = file_url_path(given) if given.startswith("file:") else Path(given)
            return path.resolve().relative_to(store.root.resolve()).as_posix()
        except ValueError:
            return given  # not in the output: judged as a key
    root = store.url("").rstrip("/") + "/"
    return given.removeprefix(root).strip("/")


def _resumed_run(given: str, store: Store, spec: TrainingSpec) -> tuple[str | None, int]:
    """The run `--resume` names, checked to exist and to have been started with `spec`;
    else None and the exit code, the reason printed."""
    try:
        run = check_run(_resume_key(given, store))
    except ValueError as exc:
        print(f"--resume: {exc}", file=sys.stderr)
        return None, ExitCode.USAGE
    recorded = store.get_json(f"{run}/spec.json")
    if recorded is None:
        print(f"--resume: there is no run {store.url(run)}", file=sys.stderr)
        return None, ExitCode.USAGE
    wanted = json.loads(spec.to_json())
    if recorded != wanted:
        changed = sorted(k for k in {*recorded, *wanted} if recorded.get(k) != wanted.get(k))
        print(f"--resume: {store.url(run)} was started with another spec "
              f"({', '.join(changed)} differ)", file=sys.stderr)
        return None, ExitCode.INVALID_INPUT
    return run, ExitCode.SUCCESS


def _print_outputs(store: Store, run: str, result: JobResult, billed: str) -> None:
    print(f"run: {store.url(run)}")
    for label, key in _ARTIFACTS:
        if (url := getattr(result.artifacts, key)) is not None:
            print(f"{label}: {url}")
    if (figures := result.validation) is not None:
        on = "held-out clips" if figures.held_out else "the training windows (none held out)"
        print(f"validation loss: {figures.loss:.4f} at step {figures.step}, best "
              f"{figures.best_loss:.4f} at step {figures.best_step}, on {figures.windows} "
              f"window(s) of {on}")
    print(f"billable units: {result.billable_units} (${cost(result.billable_units)}){billed}")


def train_locally(args: argparse.Namespace, spec: TrainingSpec | None,
                  settings: TrainSettings) -> int:
    from .dataset import FetchPolicy
    from .model.choice import choose_model
    from .progress import ProgressServer, ProgressState
    from .spec_file import resource_name
    from .stages.context import JobContext
    from .stages.dispatch import run_local
    from .stages.local import local_run_id
    from .stages.results import read_result
    from .training.launch import Ranks
    from .workspace import make_folders

    if spec is None:
        return ExitCode.INVALID_INPUT
    try:
        store = open_store(args.output or DEFAULT_OUTPUT)
    except ValueError as exc:
        print(f"--output: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        model = choose_model(spec.model, args.model, local=True).source
    except InvalidInput as exc:
        print(exc.message, file=sys.stderr)
        return ExitCode.INVALID_INPUT
    if model is None:
        print(TINY_MODEL_NOTICE, flush=True)
    make_folders()
    if args.resume:
        run, code = _resumed_run(args.resume, store, spec)
        if run is None:
            return code
    else:
        model_key = str(Path(model).absolute()) if model and "://" not in str(model) else model
        run = local_run_id(spec, resource_name(args.spec) or args.spec.stem, model_key,
                           settings.seed, settings.max_sequence_length)
    stage = JobContext(spec=spec, store=store, run=run, work_dir=Path())
    finished = read_result(stage, "train")
    if finished is not None and finished.succeeded:
        print(f"{store.url(run)} finished earlier: not training it again")
        _print_outputs(store, run, finished, ", billed when it finished")
        return ExitCode.SUCCESS

    scratch = args.work / "runs" / run.replace("/", "-")
    state = ProgressState()
    processes = getattr(args, "processes", 1)
    ctx = JobContext(spec=spec, store=store, run=run, work_dir=scratch, model=model,
                     model_cache=args.model_cache, local_run=True, progress=state,
                     fetch=FetchPolicy(allow_file_urls=True,
                                       allow_private_networks=args.allow_private_networks),
                     train_settings=settings,
                     ranks=Ranks.local(processes) if processes > 1 else None,
                     progress_port=args.progress_port, progress_host="127.0.0.1",
                     store_location=args.output or DEFAULT_OUTPUT)
    try:
        if args.progress_port is not None and ctx.in_ranks:  # served by the main rank
            print(f"progress: http://127.0.0.1:{args.progress_port}/progress (while training)",
                  file=sys.stderr)
            results = run_local(ctx)
        elif args.progress_port is not None:
            with ProgressServer(state, args.progress_port, host="127.0.0.1") as server:
                print(f"progress: http://127.0.0.1:{server.port}/progress", file=sys.stderr)
                results = run_local(ctx)
        else:
            results = run_local(ctx)
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to continue {store.url(run)}",
              file=sys.stderr)
        return 130
    final = results[-1]
    if not final.succeeded:
        print(f"{final.stage} failed ({final.reason}): {final.message}", file=sys.stderr)
        print("billable units: 0", file=sys.stderr)
        return final.exit_code
    shutil.rmtree(scratch, ignore_errors=True)  # everything it made is in the output now
    _print_outputs(store, run, final, "")
    return ExitCode.SUCCESS
