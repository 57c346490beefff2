"""torch.distributed set-up for torchrun: the same Trainer runs in 1 process or N processes / machines.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them everything
here is a no-op and the world has one process. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun prepared (idempotent); a single process gets a 1-process context."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                       local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)))


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor of counters across ranks (identity in a single process)."""
    if ctx.enabled:
        # gloo reduces CPU tensors, NCCL CUDA tensors: keep the counters on the device of the group.
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True when `flag` is true on every rank (a MIN all-reduce; `flag` itself in a single process).

    Example:
        step_ok = all_true(bool(torch.isfinite(loss)), ctx, device)  # every rank skips the same steps
    """
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)  # on the group's device (NCCL: CUDA)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group once every rank is done (a rank tearing gloo down while its peer is still in a
    collective or connected can abort the peer at exit).

    DDP wrappers of finished fits are collected first: otherwise their reducers keep the gloo group alive until
    interpreter shutdown, where tearing it down can abort the process ("terminate called without an active
    exception", seen once in ~40 runs of the torchrun test on 2 loaded cores)."""
    if ctx.enabled and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
