"""Process rank and world size: the one place that asks torch.distributed, Lightning or the launcher's env vars."""

from __future__ import annotations

import os
from typing import Any

#: env vars a multi-process launcher sets for a child process (Lightning DDP, torchrun, SLURM srun)
LAUNCHER_RANK_VARS = ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK")


def dist_info(trainer: Any = None) -> tuple[int, int]:
    """(rank, world size): torch.distributed when initialised, else the Lightning trainer's, else (0, 1)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if trainer is not None:
        return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))
    return 0, 1


def env_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, else torch.distributed, else the ``RANK`` / ``WORLD_SIZE`` env vars.

    Raises:
        ValueError: a rank outside ``[0, world_size)``.
    """
    import torch

    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
        else:
            rank = int(os.environ.get("RANK", 0)) if rank is None else rank
            world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank / world size: {rank} / {world_size}")
    return rank, world_size


def launcher_rank() -> int:
    """Non-zero inside a process a multi-process launcher started for another rank (Lightning DDP children, srun
    tasks): the largest of :data:`LAUNCHER_RANK_VARS` that is set, else 0."""
    ranks = [os.environ.get(k) for k in LAUNCHER_RANK_VARS]
    return max((int(r) for r in ranks if r not in (None, "") and r.isdigit()), default=0)


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) in the main process."""
    import torch

    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))


def local_cuda_device() -> str:
    """This process's GPU before Lightning has set one: ``cuda:<LOCAL_RANK>`` (``cuda:0`` without a launcher), so that
    work done at model construction (e.g. quantizing the base layer by layer on the GPU) lands on each rank's own
    card rather than all on card 0."""
    local = os.environ.get("LOCAL_RANK", "")
    return f"cuda:{int(local) if local.isdigit() else 0}"
