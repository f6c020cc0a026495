"""Device choice and torchrun/DDP process groups (nccl on GPU, gloo on CPU)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from phenoprint.embedder.config import DEVICES
from phenoprint.logs import warn_once

log = logging.getLogger(__name__)


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``auto | cpu | cuda``; ``auto`` falls back to the CPU with a warning (once per process).

    Raises:
        ValueError: ``cuda`` was asked for and none is available, or an unknown preference.
    """
    if preference not in DEVICES:
        raise ValueError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {preference!r}")
    has_cuda = torch.cuda.is_available()
    if preference == "cuda" and not has_cuda:
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device; use --device auto or cpu")
    if preference == "cpu" or not has_cuda:
        if preference == "auto":
            warn_once(log, "no CUDA device available: running on the CPU (slow beyond small images and models)")
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) run."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1), or describe a single process.

    The backend is nccl when this process drives a CUDA device, else gloo (multi-process CPU runs work too).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("joined process group: rank %d of %d on %s", rank, world, device)
    return DistContext(rank, local_rank, world, device)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
