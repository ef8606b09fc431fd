"""The ranks of a data-parallel training: who this process is, and what they share.

A process started by the launcher (`launch.py`, torch's elastic agent) finds its place in
the environment the agent sets (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`)
and its node in `PET_NODE_RANK` (the pod's completion index; `JOB_COMPLETION_INDEX`
otherwise). A process started any other way is the one rank of a world of one, and none
of the helpers here communicate.

The *main* rank — local rank 0 of node 0, the pod the operator reads — alone writes
checkpoints, outputs and results. It is chosen by node, not by global rank, because the
c10d rendezvous numbers nodes in the order it sorts them, which on one host (the test
harness) is by process id.

Data parallel over the LoRA: after each rank's backward, the LoRA gradients are summed
over the ranks in one flat all-reduce and divided by the global batch, the same sum a
single process that accumulates the same samples takes (`placement.Replicated`,
`Trainer`'s `accumulate`). DDP is
not used: it would wrap the transformer (changing the module every other part calls and
the LoRA's state names), it pre-divides each rank's gradients before summing, and its
overlap of communication with the backward buys little for LoRA gradients, which are a
small fraction of a step's work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from ltx_contract.outcomes import Outcome

log = logging.getLogger(__name__)

#: seconds a collective waits for a peer before it fails (a backstop: a dead local rank is
#: seen by the elastic agent within a second, a dead node by the rendezvous)
DEFAULT_COLLECTIVE_TIMEOUT = 600.0


@dataclass(frozen=True)
class World:
    rank: int = 0  # global rank
    size: int = 1  # ranks in all
    local_rank: int = 0
    local_size: int = 1  # ranks on this node
    node: int = 0  # the node's index (the pod's completion index)
    main_rank: int = 0  # the global rank of local rank 0 on node 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        node = env.get("PET_NODE_RANK") or env.get("JOB_COMPLETION_INDEX") or \
            env.get("GROUP_RANK", "0")
        return cls(rank=int(env["RANK"]), size=int(env["WORLD_SIZE"]),
                   local_rank=int(env.get("LOCAL_RANK", "0")),
                   local_size=int(env.get("LOCAL_WORLD_SIZE", "1")), node=int(node))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """The rank that writes: local rank 0 of node 0."""
        return self.node == 0 and self.local_rank == 0

    @property
    def is_local_main(self) -> bool:
        """The rank that writes the node's own files (its copy of the cache)."""
        return self.local_rank == 0


SINGLE = World()


def init(world: World, timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT) -> tuple[World,
                                                                              torch.device]:
    """Join the process group (NCCL on CUDA, gloo on CPU) and find the main rank; the
    world (with `main_rank` set) and this rank's device, `cuda:LOCAL_RANK` on a GPU."""
    import torch.distributed as dist

    from ..model.loader import default_device

    if not world.distributed:
        return world, default_device()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", world.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group("nccl" if cuda else "gloo", store=_attempt_store(world, timeout),
                                rank=world.rank, world_size=world.size, timeout=timeout,
                                device_id=device if cuda else None)
    flags = gather_objects(world, world.is_main)
    if flags.count(True) != 1:
        raise RuntimeError(f"expected one rank on node 0 with local rank 0, found "
                           f"{flags.count(True)}: PET_NODE_RANK must be the pod's index")
    world = World(world.rank, world.size, world.local_rank, world.local_size, world.node,
                  main_rank=flags.index(True))
    log.info("rank %d of %d (node %d, local rank %d, pid %d) on %s", world.rank, world.size,
             world.node, world.local_rank, os.getpid(), device)
    return world, device


class RankFailure(Outcome):
    """An outcome one rank met (invalid input, a failed download), raised on every rank so
    that all of them end the run together, with that rank's reason, message and code."""

    def __init__(self, rank: int, reason: str, message: str, exit_code: int):
        super().__init__(message)
        self.rank, self.reason, self.exit_code = rank, reason, exit_code

    def __reduce__(self) -> tuple[Any, ...]:
        return RankFailure, (self.rank, self.reason, self.message, int(self.exit_code))


def failure_of(exc: Outcome, world: World) -> RankFailure:
    return RankFailure(world.rank, exc.reason, exc.message, int(exc.exit_code))


def raise_failure(failures: Sequence[RankFailure | None]) -> None:
    """Raise the lowest rank's failure, if any rank had one (`failures`: every rank's, as
    `gather_objects` gives them)."""
    first = next((f for f in failures if f is not None), None)
    if first is not None:
        raise first


def _attempt_store(world: World, timeout: timedelta) -> Any:
    """The agent's store, under a prefix of its own per attempt: a group started again after
    a rank died must not read the addresses the dead attempt's ranks left there (on one
    node the c10d rendezvous keeps one store across attempts)."""
    import torch.distributed as dist

    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world.size,
                          is_master=not agent_hosts and world.rank == 0, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"ltx-extend/attempt-{attempt}", store)


def close(world: World) -> None:
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    import torch.distributed as dist

    if world.distributed:
        dist.barrier()


def gather_objects(world: World, obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    import torch.distributed as dist

    if not world.distributed:
        return [obj]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(world: World, obj: Any) -> Any:
    """The main rank's `obj` on every rank."""
    import torch.distributed as dist

    if not world.distributed:
        return obj
    box = [obj if world.rank == world.main_rank else None]
    dist.broadcast_object_list(box, src=world.main_rank)
    return box[0]


def any_rank(world: World, flag: bool) -> bool:
    """True on every rank when `flag` is true on any (so all of them stop together)."""
    import torch.distributed as dist

    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_gradients(world: World, params: Sequence[torch.Tensor]) -> None:
    """Sum the gradients of `params` over the ranks, in place, in one flat all-reduce."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    if not world.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if len(grads) != len(params):
        raise RuntimeError("a LoRA parameter has no gradient: every rank must train the same "
                           "modules")
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    for grad, summed in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(summed)


def mean_over_ranks(world: World, values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the ranks (a non-finite value on one rank stays so on all)."""
    import torch.distributed as dist

    if not world.distributed:
        return values
    summed = values.clone()
    dist.all_reduce(summed)
    return summed / world.size


def _comm_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
