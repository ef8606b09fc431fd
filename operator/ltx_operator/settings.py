"""Operator settings: environment variables `LTX_OPERATOR_<FIELD>` (pydantic-settings),
read once when the operator starts. Lists and mappings are JSON (as the chart writes
them), except `NAMESPACES` (comma-separated) and `TRAINER_ARGS` (one shell-quoted
string)."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from contextvars import ContextVar
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

PREFIX = "LTX_OPERATOR_"
#: The environment `from_env` reads instead of the process's (tests, the chart check).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("ltx_operator_environ",
                                                             default=None)

JsonList = Annotated[list[dict[str, Any]], NoDecode]
JsonMap = Annotated[dict[str, str], NoDecode]


class _Environment(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRON.get()
        env = os.environ if env is None else env
        return {key.lower(): value for key, value in env.items()}


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore",
                                      validate_default=True)

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Empty: all namespaces")
    trainer_image: str = "ghcr.io/ltx-extend/trainer:0.1.0"
    store_url: str = "s3://ltx-extend"
    store_secret: str | None = "ltx-extend-store"
    store_endpoint: str | None = Field(None, description="S3 endpoint URL (AWS_ENDPOINT_URL "
                                       "of the Jobs); unset: the Secret's or AWS's")
    model_claim_name: str | None = None
    model_sub_path: str = ""
    model_url: str | None = Field(None, description="The model as a store prefix (s3:// or "
                                  "file://), when no model claim is set")
    model_cache_claim_name: str | None = Field(
        None, description="A PVC the train pods keep downloaded models on (one download per "
        "claim, not per pod); unset: the pod's work volume")
    gpu_resource_name: str = "nvidia.com/gpu"
    gpu_count: int = Field(1, ge=1, le=8, description="GPUs of a train Job whose spec sets none")
    progress_port: int = 8080
    rendezvous_port: int = Field(29400, ge=1, le=65535, description="Port of the ranks' c10d "
                                 "rendezvous on the pod of index 0 (trainings on many nodes)")
    rank_restarts: int = Field(3, ge=0, le=100, description="Times the launcher restarts the "
                               "ranks of a group after one fails (PET_MAX_RESTARTS)")
    shard_base: bool = Field(False, description="Shard the frozen base model across the "
                             "ranks of a node with FSDP2 (LTX_EXTEND_SHARD_BASE=1)")
    max_workers: int = Field(20, ge=1, le=1000, description="Handlers that run at once "
                             "(Kopf's thread pool for the synchronous handlers)")
    progress_interval: float = Field(10.0, gt=0, description="Seconds between progress "
                                     "pulls and resyncs of each unfinished training")
    ttl_interval: float = Field(30.0, gt=0, description="Longest wait between TTL checks")
    job_retry_delay: float = Field(10.0, gt=0, description="Wait after a refused Job "
                                   "creation; doubles with each refusal")
    job_retry_max_delay: float = Field(600.0, gt=0, description="Longest wait between tries")
    price_per_unit: Decimal = Decimal("0.0061")
    metrics_port: int = 8000
    prepare_cpu: str = "2"
    prepare_memory: str = "8Gi"
    prepare_ephemeral_storage: str = Field(
        "20Gi", description="Scratch disk the prepare pod requests (the dataset); empty: none")
    train_cpu: str = "8"
    train_memory: str = "64Gi"
    train_ephemeral_storage: str = Field(
        "100Gi", description="Scratch disk the train pod requests (a downloaded model, the "
        "latent cache, checkpoints); empty: none")
    train_shm_size: str = Field("16Gi", description="Size of the memory-backed /dev/shm of "
                                "the train pod (data loader workers, NCCL); empty: none")
    prepare_node_selector: JsonMap = Field(default_factory=dict)
    prepare_tolerations: JsonList = Field(default_factory=list)
    train_node_selector: JsonMap = Field(
        default_factory=dict, description="Merged under the spec's nodeSelector")
    train_tolerations: JsonList = Field(
        default_factory=list, description="Added to the spec's tolerations")
    trainer_args: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra trainer flags for every Job, e.g. "
        "--checkpoint-every 100 (env: one shell-quoted string)")
    trainer_service_account: str | None = Field(
        None, description="ServiceAccount of the trainer pods (IRSA, Workload Identity)")
    trainer_image_pull_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Secrets for pulling the trainer image (JSON list "
        "of names)")
    trainer_env: JsonList = Field(default_factory=list,
                                  description="Extra EnvVars of the trainer containers")
    trainer_env_from: JsonList = Field(default_factory=list,
                                       description="Extra EnvFromSources of the trainer")
    trainer_volumes: JsonList = Field(default_factory=list,
                                      description="Extra volumes of the trainer pods")
    trainer_volume_mounts: JsonList = Field(default_factory=list,
                                            description="Extra mounts of the trainer")
    trainer_pod_labels: JsonMap = Field(default_factory=dict)
    trainer_pod_annotations: JsonMap = Field(default_factory=dict)
    kueue_api_version: str = Field("v1beta1", description="The Kueue API version whose "
                                   "Workloads the operator deactivates to suspend a Job")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any,
                                   **_: Any) -> tuple[Any, ...]:
        return init_settings, _Environment(settings_cls)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [n.strip() for n in value.split(",") if n.strip()] if isinstance(value, str) \
            else value

    @field_validator("trainer_args", mode="before")
    @classmethod
    def _shell_words(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("prepare_node_selector", "prepare_tolerations", "train_node_selector",
                     "train_tolerations", "trainer_image_pull_secrets", "trainer_env",
                     "trainer_env_from", "trainer_volumes", "trainer_volume_mounts",
                     "trainer_pod_labels", "trainer_pod_annotations", mode="before")
    @classmethod
    def _json(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():  # an empty variable: the default
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{PREFIX}{info.field_name.upper()} is not valid JSON: "
                             f"{exc}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """The settings from `env` (default: the process's environment); a bad value
        raises ValueError naming the variable and the rule."""
        token = _ENVIRON.set(env)
        try:
            return cls()
        except ValidationError as exc:
            raise ValueError(describe(exc)) from None
        finally:
            _ENVIRON.reset(token)


def describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        if error["type"] == "value_error":  # our own message names the variable already
            problems.append(str(error["ctx"]["error"]))
        else:
            problems.append(f"{PREFIX}{str(error['loc'][0]).upper()} ({error['input']!r}): "
                            f"{error['msg'].lower()}")
    return "; ".join(problems)
