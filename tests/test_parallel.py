"""run_tasks: the same results in this process and in a spawned pool; the first failure propagates."""

from __future__ import annotations

import operator

import pytest

from phenoprint.parallel import run_tasks


@pytest.mark.parametrize("workers", [1, 2])
def test_every_task_runs_once_whatever_the_pool(workers: int) -> None:
    tasks = [(i, 10 * i) for i in range(5)]
    assert sorted(run_tasks(operator.add, tasks, workers)) == [11 * i for i in range(5)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_task_raises_its_own_error(workers: int) -> None:
    with pytest.raises(ZeroDivisionError):
        list(run_tasks(operator.truediv, [(1, 1), (1, 0), (2, 1)], workers))
