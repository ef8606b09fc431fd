"""`kubectl ltx status|logs|fetch NAME`: a training at a glance, its active stage's
log, and its artifacts downloaded through their presigned links (no store client or
credentials needed). Installed as the `kubectl-ltx` command, which kubectl runs as a
plugin; it reads the same kubeconfig as kubectl."""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ltx_contract.resource import GROUP, KIND, PLURAL, VERSION
from ltx_contract.result import JobResult

from .observed import COMPLETION_INDEX

ARTIFACT_FILES = {"lora_file": "lora.safetensors", "config_file": "config.json",
                  "video": "validation.mp4", "debug_dataset": "debug_dataset.zip"}


class PluginError(Exception):
    """A failure with a message for the user (exit code 1, no trace)."""


def _connect(args: argparse.Namespace) -> tuple[client.ApiClient, str]:
    try:
        config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    except (config.ConfigException, OSError) as exc:
        raise PluginError(f"no cluster to talk to: {exc}") from None
    namespace = args.namespace
    if namespace is None:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return client.ApiClient(), namespace


def _training(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise PluginError(f"{KIND} {name} not found in namespace {namespace}") from None
        raise PluginError(f"cannot read {KIND} {name}: {exc.reason}") from None


def status_lines(training: dict[str, Any]) -> list[str]:
    """The training at a glance."""
    meta, status = training["metadata"], training.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    phase = status.get("phase") or "Pending"
    lines = [f"{KIND} {meta['namespace']}/{meta['name']}: {phase}"]
    if phase in ("Succeeded", "Failed"):
        pass
    elif (running := conditions.get("Running")) and running["status"] == "False":
        lines.append(f"  waiting: {running['reason']}: {running.get('message', '')}")
    if failed := conditions.get("Failed"):
        lines.append(f"  failed: {failed['reason']}: {failed.get('message', '')}")
    if refused := conditions.get("JobCreated"):
        if refused["status"] == "False" and phase != "Failed":
            lines.append(f"  not created: {refused['reason']}: {refused.get('message', '')}")
    progress = status.get("progress") or {}
    if progress.get("summary"):
        parts = [f"step {progress['summary']}"]
        if progress.get("percent") is not None:
            parts.append(f"{progress['percent']:.0f}%")
        if progress.get("loss") is not None:
            parts.append(f"loss {progress['loss']:.4f}")
        if progress.get("etaSeconds"):
            parts.append(f"about {_duration(progress['etaSeconds'])} left")
        lines.append("  progress: " + ", ".join(parts))
    if (validation := status.get("validation") or {}).get("loss") is not None:
        on = "held-out clips" if validation.get("heldOut") else "training windows"
        lines.append(f"  validation loss: {validation['loss']:.4f} at step "
                     f"{validation.get('step')} ({on}), best {validation.get('bestLoss', 0):.4f} "
                     f"at step {validation.get('bestStep')}")
    if billing := status.get("billing"):
        lines.append(f"  billed: {billing['units']} units (${billing.get('cost', '?')})")
    if model := (status.get("effective") or {}).get("model"):
        lines.append(f"  model: {model}")
    for stage, job in (status.get("jobs") or {}).items():
        lines.append(f"  {stage} Job: {job}")
    for key, url in (status.get("artifacts") or {}).items():
        lines.append(f"  {key}: {url}")
    if conditions:
        lines.append("  conditions:")
        lines += [f"    {c['type']:<13} {c['status']:<6} {c.get('reason', '')}"
                  for c in conditions.values()]
    return lines


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def cmd_status(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> int:
    print("\n".join(status_lines(_training(api, namespace, args.name))))
    return 0


def cmd_logs(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> int:
    training = _training(api, namespace, args.name)
    jobs = (training.get("status") or {}).get("jobs") or {}
    stage = args.stage or ("train" if jobs.get("train") else "prepare")
    job = jobs.get(stage)
    if not job:
        raise PluginError(f"{args.name} has no {stage} Job yet "
                          f"(phase {(training.get('status') or {}).get('phase', 'Pending')})")
    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    if not pods:
        raise PluginError(f"Job {job} has no pod yet")
    # rank 0's pod (index 0 of a training on many nodes) has the run's log
    leaders = [p for p in pods if (p.metadata.annotations or {}).get(COMPLETION_INDEX, "0")
               == "0"]
    pod = max(leaders or pods, key=lambda p: p.metadata.creation_timestamp or 0)
    try:
        # the raw response: the client's own decoding of text/plain is not reliable
        response = core.read_namespaced_pod_log(pod.metadata.name, namespace,
                                                follow=args.follow, tail_lines=args.tail,
                                                _preload_content=False)
        for chunk in response.stream(1 << 16):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
    except ApiException as exc:
        raise PluginError(f"cannot read the log of pod {pod.metadata.name}: "
                          f"{exc.reason}") from None
    return 0


def cmd_fetch(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> int:
    training = _training(api, namespace, args.name)
    status = training.get("status") or {}
    if status.get("phase") != "Succeeded":
        raise PluginError(f"{args.name} has no artifacts to fetch: it is "
                          f"{status.get('phase') or 'Pending'}")
    if not status.get("resultUrl"):
        stored = ", ".join((status.get("artifacts") or {}).values()) or "none listed"
        raise PluginError(f"{args.name} has no download link in its status; its artifacts "
                          f"are in the store: {stored}")
    try:
        with urllib.request.urlopen(status["resultUrl"], timeout=60) as response:
            result = JobResult.model_validate_json(response.read())
    except (OSError, ValueError) as exc:
        raise PluginError(f"cannot read the result document: {exc}") from None
    links = result.download_urls.model_dump(exclude_none=True)
    if not links:
        raise PluginError("the result document lists no download links")
    dest = Path(args.output or args.name)
    dest.mkdir(parents=True, exist_ok=True)
    for key, url in links.items():
        target = dest / ARTIFACT_FILES.get(key, key)
        partial = target.with_name(target.name + ".partial")
        try:
            with urllib.request.urlopen(url, timeout=600) as response, partial.open("wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise PluginError(f"cannot download {key}: {exc}") from None
        partial.rename(target)  # a file is there whole or not at all
        print(f"{target} ({target.stat().st_size} bytes)")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubectl ltx", description=__doc__)
    top.add_argument("-n", "--namespace", help="the training's namespace (default: the "
                     "kubeconfig context's)")
    top.add_argument("--context", help="kubeconfig context")
    top.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG or ~/.kube)")
    commands = top.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="phase, progress, bill and artifacts")
    logs = commands.add_parser("logs", help="the log of the active stage's newest pod")
    logs.add_argument("--stage", choices=("prepare", "train"), help="default: the active one")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=None, help="last N lines")
    fetch = commands.add_parser("fetch", help="download the artifacts of a succeeded training")
    fetch.add_argument("-o", "--output", help="folder (default: ./NAME)")
    for command in (status, logs, fetch):
        command.add_argument("name", help=f"the {KIND}")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        api, namespace = _connect(args)
        return {"status": cmd_status, "logs": cmd_logs, "fetch": cmd_fetch}[args.command](
            api, namespace, args)
    except PluginError as exc:
        print(f"kubectl ltx {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
