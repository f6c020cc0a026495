"""Run independent tasks in this process or a spawned process pool, yielding results as tasks finish."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

R = TypeVar("R")


def run_tasks(fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]], workers: int) -> Iterator[R]:
    """``fn(*task)`` for every task: in this process when ``workers`` is 1 (or there is one task), else in a pool of
    spawned processes, each result yielded as its task finishes (in completion order). The first failure cancels
    the tasks not yet started and propagates.

    Spawn, not fork: the caller may hold threads (torch, BLAS) that a forked child would inherit half-locked.
    """
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            yield fn(*task)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        pending: set[Future[R]] = {pool.submit(fn, *task) for task in tasks}
        try:
            while pending:
                # FIRST_COMPLETED, not FIRST_EXCEPTION: the latter returns only once every task is done when none
                # fails, so callers that record progress per task (pack's done flags) would record it at the end
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
