"""One batch ahead: the next batch's host-to-device copy and device-side preprocessing overlap the current compute."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import torch

Batch = dict[str, Any]


class DevicePrefetcher:
    """Iterate a loader's batches already on the device and prepared, the next one in flight while the caller
    computes on the current one.

    On CUDA, ``prepare`` (which should copy with ``non_blocking=True`` from the loader's pinned memory and run the
    device-side preprocessing) is issued on a side stream for batch i+1 before batch i is handed out; the compute
    stream waits for it only when batch i+1 is taken, and every tensor of it is recorded on the compute stream so
    the caching allocator does not reuse its memory early. On the CPU, ``prepare`` simply runs in turn.

    Args:
        loader: an iterable of batches (dicts of tensors), typically a ``DataLoader`` with ``pin_memory=True``.
        device: where the batches go.
        prepare: ``prepare(batch, device) -> batch``, the copy plus any device-side work.
    """

    def __init__(self, loader: Iterable[Batch], device: torch.device, prepare: Callable[[Batch, torch.device], Batch]):
        self.loader = loader
        self.device = device
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        batches = iter(self.loader)

        def issue() -> Batch | None:
            try:
                batch = next(batches)
            except StopIteration:
                return None
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                return self.prepare(batch, self.device)

        upcoming = issue()
        while upcoming is not None:
            if stream is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_stream(stream)
                for value in upcoming.values():
                    if isinstance(value, torch.Tensor) and value.is_cuda:
                        value.record_stream(compute)
            current, upcoming = upcoming, issue()
            yield current
