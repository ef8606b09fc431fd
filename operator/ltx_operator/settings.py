"""Operator settings, from environment variables (`LTX_OPERATOR_*`) and flags."""

from __future__ import annotations

import os
import shlex
from decimal import Decimal

from pydantic import BaseModel, Field


class OperatorSettings(BaseModel):
    namespaces: list[str] = Field(default_factory=list, description="Empty: all namespaces")
    trainer_image: str = "ghcr.io/ltx-extend/trainer:0.1.0"
    store_url: str = "s3://ltx-extend"
    store_secret: str | None = "ltx-extend-store"
    model_claim_name: str | None = None
    model_sub_path: str = ""
    gpu_resource_name: str = "nvidia.com/gpu"
    progress_port: int = 8080
    progress_interval: float = 10.0
    ttl_interval: float = 30.0
    price_per_unit: Decimal = Decimal("0.0061")
    metrics_port: int = 8000
    prepare_cpu: str = "2"
    prepare_memory: str = "8Gi"
    train_cpu: str = "8"
    train_memory: str = "64Gi"
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
            else:
                values[name] = raw  # pydantic converts numbers and decimals
        return cls.model_validate(values)
