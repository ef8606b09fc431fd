"""The LtxExtendTraining resource: identity, status shape and whole-object parsing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .rules import Rule
from .spec import MAX_NODES, SpecError, TrainingSpec, parse_spec

GROUP = "ltx-training.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LtxExtendTraining"
PLURAL = "ltxextendtrainings"
SINGULAR = "ltxextendtraining"
SHORT_NAMES = ["ltxt"]
CATEGORIES = ["ltx", "training"]

#: Child Jobs are named <name>-<stage>; a Job name is at most 63 characters.
JOB_STAGES = ("prepare", "train")
MAX_NAME_LENGTH = 63 - len("-prepare")

Phase = Literal["Pending", "Preparing", "Training", "Uploading", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[str, ...] = Phase.__args__

NAME_LENGTH = Rule(
    field="metadata.name",
    check=lambda o: len(o["metadata"]["name"]) <= MAX_NAME_LENGTH,
    message=lambda o: (
        f"metadata.name ({o['metadata']['name']!r}) must be at most {MAX_NAME_LENGTH} "
        "characters so that its Job names fit in 63"
    ),
    cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
    message_cel=(
        "'metadata.name (\\'' + self.metadata.name + '\\') must be at most "
        f"{MAX_NAME_LENGTH} characters so that its Job names fit in 63'"
    ),
)

#: With nodes > 1 the train pods are `<name>-train-<index>` behind a Service `<name>-train`:
#: a Service name is a DNS-1035 label and a pod's hostname at most 63 characters.
MAX_GANG_NAME_LENGTH = 63 - len(f"-train-{MAX_NODES - 1}")
DNS_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _nodes(obj: Mapping[str, Any]) -> int:
    spec = obj.get("spec")
    nodes = spec.get("nodes", 1) if isinstance(spec, Mapping) else 1
    return nodes if isinstance(nodes, int) else 1  # a wrong type is the spec's own error


NAME_ON_NODES = Rule(
    field="metadata.name",
    check=lambda o: _nodes(o) <= 1 or (
        len(o["metadata"]["name"]) <= MAX_GANG_NAME_LENGTH
        and re.fullmatch(DNS_LABEL, o["metadata"]["name"]) is not None),
    message=lambda o: (
        f"metadata.name ({o['metadata']['name']!r}) must be at most {MAX_GANG_NAME_LENGTH} "
        "characters of lowercase letters, digits and '-', starting with a letter, when nodes "
        "is more than 1: its train pods are addressed through a Service of that name"
    ),
    cel=(f"!has(self.spec.nodes) || self.spec.nodes <= 1 || (size(self.metadata.name) <= "
         f"{MAX_GANG_NAME_LENGTH} && self.metadata.name.matches('{DNS_LABEL}'))"),
    message_cel=(
        "'metadata.name (\\'' + self.metadata.name + '\\') must be at most "
        f"{MAX_GANG_NAME_LENGTH} characters of lowercase letters, digits and \\'-\\', "
        "starting with a letter, when nodes is more than 1: its train pods are addressed "
        "through a Service of that name'"
    ),
)

#: The rules on the resource's name, in the order they are reported.
NAME_RULES = (NAME_LENGTH, NAME_ON_NODES)


def name_problems(obj: Mapping[str, Any]) -> list[str]:
    """What is wrong with the name of a stored resource (one with a name)."""
    return [m for rule in NAME_RULES if (m := rule.violation(obj))]


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True)


class Condition(StatusModel):
    """A condition as the Kubernetes API conventions define it."""

    type: str = Field(description="Validated, JobCreated, DatasetReady, Running, Training, "
                      "Suspended, Succeeded or Failed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="One CamelCase word for the last transition.")
    message: str = Field("", description="Human-readable details of the last transition.")
    last_transition_time: str | None = Field(
        None, description="When the condition last changed status (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None, description="The spec generation the condition was set for."
    )


class Progress(StatusModel):
    """Training progress, pulled from the trainer while it runs."""

    stage: str | None = Field(None, description="The trainer's current stage.")
    step: int | None = Field(None, description="Optimization steps done.")
    total_steps: int | None = Field(None, description="Optimization steps in all.")
    percent: float | None = Field(None, description="Percent of the steps done.")
    loss: float | None = Field(None, description="Latest training loss.")
    eta_seconds: float | None = Field(None, description="Estimated seconds to the end.")
    eta: str | None = Field(None, description="Estimated time to the end, written as kubectl "
                            "writes ages (e.g. 45s, 12m, 3h20m), for printer columns.")
    steps_per_second: float | None = Field(None, description="Training speed.")
    summary: str | None = Field(None, description="step/total for printer columns.")
    last_update_time: str | None = Field(None, description="When progress was last read.")


def human_duration(seconds: float) -> str:
    """A duration as kubectl writes ages (Kubernetes' `duration.HumanDuration`)."""
    seconds = max(0, round(seconds))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"


class Validation(StatusModel):
    """The validation loss: the suffix-conditioned loss at fixed noise levels and noise
    seeds, on clips held out of training, so it is comparable from step to step and rises
    when the LoRA overfits."""

    loss: float | None = Field(None, description="The latest validation loss (the mean "
                               "over the noise levels, modalities summed).")
    step: int | None = Field(None, description="The step it was computed at.")
    best_loss: float | None = Field(None, description="The lowest validation loss so far.")
    best_step: int | None = Field(None, description="The step of the lowest validation loss.")
    held_out: bool | None = Field(None, description="True: computed on held-out clips; "
                                  "false: on the training windows (spec.heldOutShare is 0 or "
                                  "the dataset has too few clips to hold one out).")
    windows: int | None = Field(None, description="The windows it is computed on.")


class Billing(StatusModel):
    """What the training billed; written exactly once, when it finishes."""

    units: int = Field(description="Billable units: max(100, steps) on success, 0 otherwise.")
    steps: int = Field(description="Optimization steps completed.")
    cost: str | None = Field(None, description="Cost in dollars at the configured unit price.")
    billed_time: str | None = Field(None, description="When the units were recorded.")


class Artifacts(StatusModel):
    """Where the outputs are."""

    lora_file: str | None = Field(None, description="The trained LoRA (.safetensors).")
    config_file: str | None = Field(None, description="JSON of the settings inference needs.")
    video: str | None = Field(None, description="The combined validation reel.")
    debug_dataset: str | None = Field(None, description="Archive of the preprocessed data.")
    loss_chart: str | None = Field(None, description="Chart of the training loss per step, "
                                   "raw and smoothed (PNG).")
    loss_log: str | None = Field(None, description="Loss per modality, sigma, learning rate "
                                 "and speed of every step (CSV).")
    logs: str | None = Field(None, description="Folder of TensorBoard event files: "
                             "`tensorboard --logdir` on a copy of it.")
    lora_best: str | None = Field(None, description="The LoRA of the step with the lowest "
                                  "validation loss (validation.bestStep), when that is not "
                                  "the last step (.safetensors).")
    validation_log: str | None = Field(None, description="The validation loss of every "
                                       "evaluation, per noise level and modality (CSV).")


class Jobs(StatusModel):
    """Names of the child Jobs."""

    prepare: str | None = Field(None, description="The prepare (CPU) Job.")
    train: str | None = Field(None, description="The train (GPU) Job.")


class Effective(StatusModel):
    """Values in effect where the spec's were normalised (frame counts snapped to 8k+1)
    or filled in from the operator's settings."""

    number_of_frames: int | None = Field(None, description="numberOfFrames as used.")
    validation_number_of_frames: int | None = Field(
        None, description="validationNumberOfFrames as used."
    )
    model: str | None = Field(
        None, description="The base model the train Job uses (a store URL or claim:path)."
    )


class Retry(StatusModel):
    """A Job the API refused to create, and when the operator tries again."""

    stage: str = Field(description="The stage whose Job was refused.")
    attempts: int = Field(description="Refusals so far.")
    next_attempt_time: str | None = Field(None, description="When the next try is due.")


class Restarts(StatusModel):
    """Restarts of a training on many nodes: when one of its pods fails, the whole gang
    (every pod, a fresh rendezvous) starts again from the last checkpoint."""

    failures: int = Field(0, description="Restarts after a pod failed: counted against "
                          "spec.backoffLimit.")
    disruptions: int = Field(0, description="Restarts after a pod was preempted, evicted or "
                             "drained: not counted.")
    replacing: str | None = Field(None, description="The uid of the failed train Job being "
                                  "replaced; unset once its successor exists.")
    active_seconds: int = Field(0, description="Seconds the failed Jobs ran (admitted, not "
                                "suspended): spent of spec.activeDeadlineSeconds.")
    last_reason: str | None = Field(None, description="Why the last restart happened.")
    last_restart_time: str | None = Field(None, description="When it happened.")


class TrainingStatus(StatusModel):
    """Status of an LtxExtendTraining, written only by the operator."""

    phase: Phase | None = Field(None, description="One-word summary of the conditions.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Conditions, one per type."
    )
    progress: Progress | None = Field(None, description="Training progress.")
    billing: Billing | None = Field(None, description="What the training billed.")
    validation: Validation | None = Field(None, description="The validation loss, latest "
                                          "and best (spec.heldOutShare).")
    artifacts: Artifacts | None = Field(None, description="Output URLs.")
    model_version: str | None = Field(
        None, description="The base model version trained on (ltx-2.3, ltx-2.5), read from "
        "the model's files: the version the LoRA works with.")
    effective: Effective | None = Field(None, description="Normalised values in effect.")
    jobs: Jobs | None = Field(None, description="Child Job names.")
    retry: Retry | None = Field(None, description="A refused Job creation being retried.")
    restarts: Restarts | None = Field(None, description="Restarts of the gang of a training "
                                      "on many nodes.")
    result_url: str | None = Field(
        None, description="Presigned HTTPS link to the run's result document, which lists a "
        "download link for every artifact."
    )
    observed_generation: int | None = Field(None, description="Last spec generation acted on.")
    start_time: str | None = Field(None, description="When the first Job started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the training finished.")


def parse_resource(obj: Any) -> tuple[str, TrainingSpec]:
    """Validate a whole LtxExtendTraining object; returns (name, spec) or raises SpecError."""
    if not isinstance(obj, dict):
        raise SpecError(["the document must be a mapping (a Kubernetes object)"])
    problems = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion ({obj.get('apiVersion')!r}) must be {API_VERSION!r}")
    if obj.get("kind") != KIND:
        problems.append(f"kind ({obj.get('kind')!r}) must be {KIND!r}")
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        problems.append("metadata.name is required")
    else:
        problems += name_problems(obj)
    if not isinstance(obj.get("spec"), dict):
        problems.append("spec is required and must be a mapping of fields")
    else:
        try:
            spec = parse_spec(obj["spec"])
        except SpecError as exc:
            problems += [f"spec.{p}" for p in exc.problems]
    if problems:
        raise SpecError(problems)
    return name, spec

