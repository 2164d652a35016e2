"""Data-parallel training under ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs) and its exact
single-process twin, gradient accumulation.

Every process iterates the same global batches (same shuffle and augmentation seeds) and cuts each into
``world_size x accumulate`` nearly equal shards; process ``r`` trains shards ``r*accumulate`` onwards.
A shard's forward pass draws its random numbers (dropout) from a seed of (trial seed, step, shard), and its
loss is weighted 1/shards in the all-reduced gradient, so DDP on W processes and one process with
``accumulate = W`` compute the same parameter updates. BatchNorm normalises each shard with its own
statistics in both; its running statistics are rank 0's under DDP (broadcast every step). Joining the
process group is :mod:`fersynth.modeling.process_group`.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from fersynth.modeling.process_group import Distributed


def wrap(model: nn.Module, state: Distributed) -> nn.Module:
    if state.world_size == 1:
        return model
    ids = [torch.device(state.device).index] if state.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(values: list[float], state: Distributed) -> list[float]:
    if state.world_size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=state.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    state: Distributed,
    accumulate: int,
    seed: int,
    step: int,
    autocast: bool,
    label_smoothing: float = 0.0,
) -> tuple[float, int]:
    """Forward and backward this process's shards of one global batch (the caller steps the optimiser).
    Returns (sum of per-image losses, images) over this process's shards."""
    shards = state.world_size * accumulate
    xs, ys = torch.tensor_split(x, shards), torch.tensor_split(y, shards)
    total, seen = 0.0, 0
    for k in range(state.rank * accumulate, (state.rank + 1) * accumulate):
        last = k == (state.rank + 1) * accumulate - 1
        sync = nullcontext() if last or state.world_size == 1 else model.no_sync()
        with sync, torch.random.fork_rng(devices=[]), torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            torch.manual_seed(seed * 1_000_003 + step * shards + k)
            loss = nn.functional.cross_entropy(model(xs[k]), ys[k], label_smoothing=label_smoothing)
            # DDP averages gradients over processes: weight each shard so the sum over all shards is a mean
            (loss / accumulate).backward()
        total += loss.item() * len(ys[k])
        seen += len(ys[k])
    return total, seen


def sync_buffers(model: nn.Module, state: Distributed) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics) before evaluating, so all of
    them see the same validation numbers and take the same scheduler and checkpoint decisions."""
    if state.world_size == 1:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, 0)
