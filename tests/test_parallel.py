"""run_tasks: the same results in this process and in a spawned pool; the first failure propagates."""

from __future__ import annotations

import operator
import time
from pathlib import Path

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


def wait_for_file(path: str, timeout_s: float) -> str:
    """A task that finishes only once ``path`` exists (or gives up after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not Path(path).exists():
        if time.monotonic() > deadline:
            return "gave up"
        time.sleep(0.01)  # polling a file another process writes
    return "released"


def test_each_result_is_yielded_as_soon_as_its_task_finishes(tmp_path: Path) -> None:
    """With FIRST_EXCEPTION the pool's wait returned only when every task was done, so a caller recording progress
    (pack's done flags, synth's bar) saw nothing until the end. Here the slow task finishes only after the caller has
    seen the fast one."""
    gate = tmp_path / "gate"
    results = []
    for result in run_tasks(wait_for_file, [(str(gate), 30.0), (str(tmp_path / "exists"), 0.0)], 2):
        results.append(result)
        gate.touch()  # releases the slow task, but only once a first result has been handed over
    assert sorted(results) == ["gave up", "released"]
    assert results[1] == "released"
