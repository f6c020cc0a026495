"""Micro-batching: concurrent requests' wells gathered into one forward pass that runs off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosedError(RuntimeError):
    """The batcher is not running (the service is starting or shutting down)."""


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class MicroBatcher(Generic[T, R]):
    """Run ``run_batch`` on lists of items that concurrent callers :meth:`submit`, one batch at a time.

    A single worker task takes the oldest waiting item and everything queued behind it (up to ``max_batch``). It
    waits up to ``wait_s`` for more only while other callers are between :meth:`arriving` and :meth:`submit`
    (decoding their images), so a lone request is never delayed; under load, requests queue while the previous
    batch runs and the next batch takes them all. ``run_batch`` always runs in the same dedicated thread, off the
    event loop: torch's intra-op thread pool belongs to the thread that calls it, and one caller keeps it to one
    pool. When ``run_batch`` raises on a batch of several items, each item is retried alone, so one bad well fails
    only its own request.

    Args:
        run_batch: maps a list of items to a list of results of the same length and order.
        max_batch: items per call at most.
        wait_s: how long a batch may wait for arriving callers.
        on_batch: called with (batch size, seconds) after each successful call (metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 16,
        wait_s: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0; got {wait_s}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.on_batch = on_batch
        self._queue: deque[_Pending[T, R]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._arriving = 0

    async def __aenter__(self) -> MicroBatcher[T, R]:
        self._wakeup = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phenoprint-batch")
        self._worker = asyncio.create_task(self._work(), name="phenoprint-micro-batcher")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with suppress(asyncio.CancelledError):
                await worker
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosedError("the service is shutting down"))
        if self._thread is not None:
            self._thread.shutdown(wait=True)  # a batch still running finishes; nothing new starts
            self._thread = None

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @contextmanager
    def arriving(self) -> Iterator[Arrival[T, R]]:
        """Announce an item that will be submitted soon (through the yielded :class:`Arrival`), so that a batch
        forming meanwhile waits for it (up to ``wait_s``); leaving the block without submitting withdraws it."""
        arrival = Arrival(self)
        self._arriving += 1
        try:
            yield arrival
        finally:
            arrival._withdraw()

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (or the exception its batch raised for it).

        Raises:
            BatcherClosedError: the batcher is not running.
        """
        if not self.running or self._wakeup is None:
            raise BatcherClosedError("the service is not running (starting up or shutting down)")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future))
        self._wakeup.set()
        return await future

    async def run_now(self, items: list[T]) -> Sequence[R]:
        """Run ``run_batch`` on ``items`` in the batch thread, bypassing the queue and the metrics (a warm-up).

        Raises:
            BatcherClosedError: the batcher is not running.
        """
        if self._thread is None:
            raise BatcherClosedError("the service is not running (starting up or shutting down)")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, items)

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take()
            deadline = loop.time() + self.wait_s
            # Callers still decoding their images will submit within moments: wait for them, not for strangers.
            while len(batch) < self.max_batch and self._arriving > 0 and loop.time() < deadline:
                self._wakeup.clear()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                batch += self._take(self.max_batch - len(batch))
            batch = [p for p in batch if not p.future.done()]  # callers that gave up (client disconnected)
            if batch:
                await self._run(batch)

    def _take(self, n: int | None = None) -> list[_Pending[T, R]]:
        n = self.max_batch if n is None else n
        out: list[_Pending[T, R]] = []
        while self._queue and len(out) < n:
            out.append(self._queue.popleft())
        return out

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        started = time.perf_counter()
        try:
            assert self._thread is not None
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._thread, self._call, [p.item for p in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            log.warning("a batch of %d failed (%s); embedding its items one by one", len(batch), exc)
            for pending in batch:
                await self._run([pending])
            return
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - started)
        for pending, result in zip(batch, results, strict=True):
            _settle(pending, result=result)

    def _call(self, items: list[T]) -> Sequence[R]:
        results = self.run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
        return results


class Arrival(Generic[T, R]):
    """A caller announced by :meth:`MicroBatcher.arriving`; submit its item through it."""

    def __init__(self, batcher: MicroBatcher[T, R]) -> None:
        self._batcher = batcher
        self._open = True

    async def submit(self, item: T) -> R:
        """Queue the item (see :meth:`MicroBatcher.submit`); an arrival submits once."""
        if not self._open:
            raise RuntimeError("this arrival has already submitted its item")
        self._withdraw()
        return await self._batcher.submit(item)

    def _withdraw(self) -> None:
        if self._open:
            self._open = False
            self._batcher._arriving -= 1


def _settle(pending: _Pending[T, R], *, result: R | None = None, exc: BaseException | None = None) -> None:
    if pending.future.done():
        return
    if exc is not None:
        pending.future.set_exception(exc)
    else:
        pending.future.set_result(result)  # type: ignore[arg-type]
