"""Distributed data parallel through ``torchrun`` (PyTorch's own launcher and DDP; nothing home-made).

``torchrun --nproc_per_node N -m simclip_bench train ...`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set; each joins the process group (NCCL on CUDA, gloo on CPU),
uses GPU ``LOCAL_RANK``, trains on its slice of every global batch, and DDP averages the gradients.
Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun with more than one process; else a single-process DistInfo."""
    if not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        # Before the first collective: NCCL's object collectives (the run directory is broadcast before the
        # training session picks its GPU) use the current device, which would be GPU 0 on every rank.
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info


def device_for_rank(device: torch.device, info: DistInfo) -> torch.device:
    """Each process on its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if device.type == "cuda" and info.enabled:
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return device


def mean_over_ranks(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def sum_over_ranks(value: int, device: torch.device, info: DistInfo) -> int:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
