"""A team of processes under ``torchrun`` (or ``accelerate launch``): joining the process group (NCCL on
GPUs, gloo on CPUs) and exchanging picklable results. What the team computes is the stage's business
(data-parallel training in :mod:`fersynth.train.data_parallel`, shares of generation rounds in
:mod:`fersynth.generate.quota` and :func:`fersynth.generate.ddpm.ddpm_sample`); only rank 0 writes
(:func:`variant_writer`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image

from fersynth.errors import ParamsError
from fersynth.variants.variant import VariantWriter

DEVICE_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?")


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


def check_device(param: str, device: Any) -> None:
    """A params device name (auto | cpu | cuda | cuda:N); a ``ValueError`` naming ``param`` otherwise."""
    if not isinstance(device, str) or not DEVICE_NAMES.fullmatch(device):
        raise ValueError(f"{param} must be auto, cpu, cuda or cuda:N, not {device!r}")


def resolve_device(device: str) -> str:
    """``auto`` as ``cuda`` where a GPU is visible, else ``cpu``; a GPU asked for where there is none is a
    one-line error before any work."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"device {device!r} asked for, but this machine has no CUDA GPU (use cpu or auto)")
    return device


def setup(device: str = "auto") -> Distributed:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); else one process."""
    device = resolve_device(device)
    cuda = device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(device=device)
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


class Discard:
    """The variant writer of the processes other than rank 0 under ``torchrun``: they generate and gate
    their shares of every round, rank 0 receives the accepted pictures and writes the variant."""

    def __enter__(self) -> Discard:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def add(self, record: dict, image: Image.Image) -> None:
        raise RuntimeError("only rank 0 writes the variant")

    def copy(self, row: pd.Series, data: bytes) -> None:
        return None

    def commit(self, report_extra: dict | None = None) -> dict:
        return dict(report_extra or {})


def variant_writer(team: Distributed, out_dir: Path, **options) -> VariantWriter | Discard:
    """``VariantWriter(out_dir, **options)`` on rank 0, :class:`Discard` on the other processes."""
    return VariantWriter(out_dir, **options) if team.main else Discard()
