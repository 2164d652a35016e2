"""A team of processes under ``torchrun`` (or ``accelerate launch``): joining the process group (NCCL on
GPUs, gloo on CPUs) and exchanging picklable results. What the team computes is the stage's business
(data-parallel training in :mod:`fersynth.train.distributed`, shares of generation rounds in
:mod:`fersynth.generate.quota`); only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    # the gloo group that carries pickled objects when the default group is NCCL (None: the default group)
    objects: Any = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Distributed:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); else one process."""
    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(device=("cuda" if cuda else "cpu") if device == "auto" else device)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    # NCCL would stage every pickled object through GPU memory; a gloo group keeps them on the CPU
    objects = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return Distributed(dist.get_rank(), world_size, f"cuda:{local_rank}" if cuda else "cpu", objects)


def teardown(state: Distributed) -> None:
    if state.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def all_gather(value: Any, state: Distributed) -> list[Any]:
    """Every process's picklable ``value``, in rank order, on every process.

    >>> all_gather({"accepted": 3}, Distributed())
    [{'accepted': 3}]
    """
    if state.world_size == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * state.world_size
    dist.all_gather_object(gathered, value, group=state.objects)
    return gathered


def gather_to_main(value: Any, state: Distributed) -> list[Any]:
    """Every process's picklable ``value``, in rank order, on rank 0; ``[]`` on the other processes (for
    what only rank 0 writes, such as pictures)."""
    if state.world_size == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * state.world_size if state.main else None
    dist.gather_object(value, gathered, dst=0, group=state.objects)
    return gathered or []
