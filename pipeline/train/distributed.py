"""One run on several processes under torchrun (DistributedDataParallel): the process group, each rank's share
of a global batch, and sums over ranks. Without torchrun the world is one process and all of it is a no-op."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from pipeline.runtime import World



def init(device_request: str, timeout_s: int = 1800) -> World:
    """The world torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK), its process group started: NCCL on CUDA,
    gloo on the CPU. A collective that waits longer than timeout_s (the other ranks, while rank 0 validates and
    tests) stops the run with an error. A plain `python -m pipeline` is a world of one."""
    world = World.from_env()
    if not world.distributed:
        return world
    if not dist.is_initialized():
        nccl = torch.cuda.is_available() and device_request in ("auto", "cuda")
        if nccl:
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if nccl else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return world


def local_share(items, world: World):
    """This rank's contiguous part of a global batch (a slice of a tensor or a list); parts differ by at most
    one item, and their concatenation in rank order is the whole batch."""
    n = len(items)
    start, end = world.rank * n // world.size, (world.rank + 1) * n // world.size
    return items[start:end]


def sum_over_ranks(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum of a tensor over every rank (the tensor itself in a world of one)."""
    if world.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(world: World) -> None:
    """Wait until every rank gets here (rank 0 scores and saves while the others wait)."""
    if world.distributed:
        dist.barrier()


def close(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """The model as the training step calls it: under DDP (gradients averaged over ranks) in a larger world."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def dropout_seed(seed: int, epoch: int, world: World) -> int:
    """The seed of one rank's dropout stream in one epoch: ranks draw different masks (each sees other pairs),
    and a resumed run draws what an uninterrupted one would, epoch by epoch."""
    return (seed * 1_000_003 + epoch) * 1_009 + world.rank


def from_rank0(compute, world: World):
    """compute() on rank 0, and its (picklable) result on every rank."""
    if not world.distributed:
        return compute()
    box = [compute() if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
