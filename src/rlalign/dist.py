"""Which process this is, and the process group: rank-aware code without global singletons.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) :func:`init_distributed` joins the
default process group with PyTorch's own engine -- NCCL on GPUs, gloo on CPUs -- and
:class:`RankInfo` says which rank this process is. A plain ``python`` process is rank 0 of 1
and never touches ``torch.distributed``. Only the main process (rank 0) writes files and prints
progress.

The helpers below are no-ops in a single process, so stage code calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

# Seconds a collective may wait for a rank before failing. A rank that dies makes torchrun stop
# the others; this bounds the wait when a rank hangs instead of dying.
TIMEOUT_ENV = "RLALIGN_DIST_TIMEOUT"


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def detect(cls) -> RankInfo:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
            return cls(dist.get_rank(), dist.get_world_size(), local)
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )


def launched_distributed() -> bool:
    """True when torchrun (or another launcher) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed() -> RankInfo:
    """Join the default process group when launched by torchrun; returns this rank.

    NCCL when CUDA is available (each rank on GPU ``LOCAL_RANK``), gloo otherwise. Idempotent.
    """
    import torch.distributed as dist

    if not launched_distributed() or (dist.is_available() and dist.is_initialized()):
        return RankInfo.detect()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and os.environ.get("RLALIGN_DIST_BACKEND") != "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
    return RankInfo.detect()


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place, and returned); identity in a single process."""
    if is_distributed():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_ranks_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is true on every rank (a MIN all-reduce)."""
    if not is_distributed():
        return flag
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 shards modules in place: nothing to unwrap)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model
