"""Operator settings, from environment variables (`LTX_OPERATOR_*`) and flags."""

from __future__ import annotations

import json
import os
import shlex
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, ValidationError


class OperatorSettings(BaseModel):
    namespaces: list[str] = Field(default_factory=list, description="Empty: all namespaces")
    trainer_image: str = "ghcr.io/ltx-extend/trainer:0.1.0"
    store_url: str = "s3://ltx-extend"
    store_secret: str | None = "ltx-extend-store"
    store_endpoint: str | None = Field(None, description="S3 endpoint URL (AWS_ENDPOINT_URL "
                                       "of the Jobs); unset: the Secret's or AWS's")
    model_claim_name: str | None = None
    model_sub_path: str = ""
    model_url: str | None = Field(None, description="The model as a store prefix (s3:// or "
                                  "file://), when no model claim is set")
    gpu_resource_name: str = "nvidia.com/gpu"
    gpu_count: int = Field(1, ge=1, le=8, description="GPUs of a train Job whose spec sets none")
    progress_port: int = 8080
    max_workers: int = Field(20, ge=1, le=1000, description="Handlers that run at once "
                             "(Kopf's thread pool for the synchronous handlers)")
    progress_interval: float = 10.0
    ttl_interval: float = 30.0
    price_per_unit: Decimal = Decimal("0.0061")
    metrics_port: int = 8000
    prepare_cpu: str = "2"
    prepare_memory: str = "8Gi"
    train_cpu: str = "8"
    train_memory: str = "64Gi"
    prepare_node_selector: dict[str, str] = Field(default_factory=dict)
    prepare_tolerations: list[dict[str, Any]] = Field(default_factory=list)
    train_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Merged under the spec's nodeSelector")
    train_tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Added to the spec's tolerations")
    trainer_args: list[str] = Field(
        default_factory=list, description="Extra trainer flags for every Job, e.g. "
        "--checkpoint-every 100 (env: one shell-quoted string)")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ) if env is None else env
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(f"LTX_OPERATOR_{name.upper()}")
            if raw is None:
                continue
            if name == "namespaces":
                values[name] = [n.strip() for n in raw.split(",") if n.strip()]
            elif name == "trainer_args":
                values[name] = shlex.split(raw)
            elif name.endswith(("_node_selector", "_tolerations")):
                try:
                    values[name] = json.loads(raw)  # JSON, as the chart writes them
                except json.JSONDecodeError as exc:
                    raise ValueError(f"LTX_OPERATOR_{name.upper()} is not valid JSON: "
                                     f"{exc}") from None
            else:
                values[name] = raw  # pydantic converts numbers and decimals
        try:
            return cls.model_validate(values)
        except ValidationError as exc:  # named by the variable the user set
            raise ValueError("; ".join(
                f"LTX_OPERATOR_{str(e['loc'][0]).upper()} ({e['input']!r}): {e['msg'].lower()}"
                for e in exc.errors())) from None
