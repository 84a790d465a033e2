"""Data-parallel training with ``torchrun`` (one process per GPU, or several on a CPU).

``torchrun --nproc_per_node=N -m cxrlab.engine ...`` starts N copies of the same program and
tells each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` through the environment.
:func:`init_distributed` reads them and joins the process group (NCCL between GPUs, gloo on
CPU). Every rank computes the same batch order and takes its slice of each global batch
(:class:`cxrlab.engine.batching.EpochBatchSampler`); ``DistributedDataParallel`` averages the
gradients, so N ranks with ``batch_size / N`` images each take the same step as one process
with the whole batch (exactly so for a loss that is a mean over images and a network without
batch-norm; batch-norm statistics stay per rank). Only rank 0 writes checkpoints and logs.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a no-op for a
single process.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Join the process group described by torchrun's environment (idempotent).

    ``device`` is the resolved device kind ("cuda", "cpu", ...): NCCL is used with CUDA, gloo
    otherwise. Returns the rank information; a single process gets ``DistInfo()``.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set; start the program "
                               "with `torchrun --nproc_per_node=N ...`")
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return current()


def current() -> DistInfo:
    """Rank information of the running process group (``DistInfo()`` without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                    backend=str(dist.get_backend()))


def is_main() -> bool:
    return current().is_main


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if current().enabled:
        dist.barrier()


_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduced copy of ``t`` over ranks (``op`` "sum", "min", "max", "mean"); ``t`` unchanged."""
    if not current().enabled:
        return t.clone()
    out = t.detach().clone().to(_comm_device())
    dist.all_reduce(out, op=getattr(dist.ReduceOp, _OPS["sum" if op == "mean" else op]))
    if op == "mean":
        out = out / dist.get_world_size()
    return out.to(t.device)


def all_gather_object(obj):
    """List of ``obj`` from every rank, in rank order (``[obj]`` for a single process)."""
    info = current()
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(module)`` when running distributed, else ``module`` itself."""
    if not current().enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
    return DDP(module, find_unused_parameters=bool(getattr(module, "ddp_find_unused", False)),
               **kwargs)


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun program)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
