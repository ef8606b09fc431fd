"""The launcher: a training's ranks started by torch's elastic agent, as `torchrun` does.

The settings are torchrun's own environment variables (`PET_NPROC_PER_NODE`,
`PET_NNODES`, `PET_NODE_RANK`, `PET_RDZV_BACKEND`, `PET_RDZV_ENDPOINT`, `PET_RDZV_ID`,
`PET_MAX_RESTARTS`; Kubeflow Trainer and the operator set them), or `ltx-extend train
--processes N` on this machine. The agent (`torch.distributed.launcher.api.elastic_launch`)
meets the other nodes at the rendezvous (c10d unless told otherwise), starts the ranks with
the `spawn` start method (a fresh interpreter each: no CUDA state or threads inherited from
the launcher, and the same environment, so the write guard and the work-folder confinement
hold in every rank), and when a rank dies it stops
the others and starts the group again, up to `max_restarts` times; the ranks then resume
from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_RESTARTS = 3
RENDEZVOUS_PORT = 29400


@dataclass(frozen=True)
class Ranks:
    per_node: int = 1
    nodes: int = 1
    node_rank: int = 0
    endpoint: str | None = None  # host:port of the rendezvous; None: this host, a free port
    run_id: str = ""
    max_restarts: int = DEFAULT_RESTARTS
    backend: str = "c10d"  # the rendezvous's

    @property
    def total(self) -> int:
        return self.per_node * self.nodes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Ranks:
        """The launcher settings torchrun reads from the environment."""
        env = os.environ if env is None else env

        def number(name: str, default: int) -> int:
            text = env.get(name) or str(default)
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{name} must be a whole number, not {text!r}") from None

        ranks = cls(per_node=number("PET_NPROC_PER_NODE", 1), nodes=number("PET_NNODES", 1),
                    node_rank=number("PET_NODE_RANK", number("JOB_COMPLETION_INDEX", 0)),
                    endpoint=env.get("PET_RDZV_ENDPOINT") or None,
                    run_id=env.get("PET_RDZV_ID", ""),
                    max_restarts=number("PET_MAX_RESTARTS", DEFAULT_RESTARTS),
                    backend=env.get("PET_RDZV_BACKEND") or "c10d")
        if ranks.per_node < 1 or ranks.nodes < 1 or not 0 <= ranks.node_rank < ranks.nodes:
            raise ValueError(f"PET_NPROC_PER_NODE ({ranks.per_node}) and PET_NNODES "
                             f"({ranks.nodes}) must be 1 or more and PET_NODE_RANK "
                             f"({ranks.node_rank}) below PET_NNODES")
        if ranks.nodes > 1 and ranks.endpoint is None:
            raise ValueError("PET_RDZV_ENDPOINT (host:port of node 0) is needed with "
                             "PET_NNODES above 1")
        return ranks

    @classmethod
    def local(cls, processes: int, max_restarts: int = DEFAULT_RESTARTS) -> Ranks:
        """`processes` ranks on this machine."""
        return cls(per_node=processes, max_restarts=max_restarts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(ranks: Ranks, logs: Path, entry: Callable[..., Any], *args: Any) -> dict[int, Any]:
    """Run `entry(*args)` in each of this node's ranks through the elastic agent; what each
    local rank returned, by local rank. Raises torch's `ChildFailedError` once a rank has
    failed more often than `max_restarts` allows."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    endpoint = ranks.endpoint or f"127.0.0.1:{free_port()}"
    configs: dict[str, Any] = {"join_timeout": 900}
    if ranks.endpoint is None:
        configs["is_host"] = True
    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: the ranks share the cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks.per_node))
    os.environ["PET_NODE_RANK"] = str(ranks.node_rank)  # the ranks' node (distributed.World)
    logs.mkdir(parents=True, exist_ok=True)
    config = LaunchConfig(
        min_nodes=ranks.nodes, max_nodes=ranks.nodes, nproc_per_node=ranks.per_node,
        run_id=ranks.run_id or uuid.uuid4().hex, rdzv_backend=ranks.backend,
        rdzv_endpoint=endpoint,
        rdzv_configs=configs, max_restarts=ranks.max_restarts, monitor_interval=0.2,
        start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=str(logs)))
    log.info("starting %d rank(s) on node %d of %d (rendezvous %s, up to %d restarts)",
             ranks.per_node, ranks.node_rank, ranks.nodes, endpoint, ranks.max_restarts)
    return elastic_launch(config, entry)(*args)
