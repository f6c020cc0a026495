"""Micro-batching: concurrent items share a call, a lone item is not delayed, one bad item fails alone."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from phenoprint.api.batcher import BatcherClosedError, MicroBatcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """``run_batch`` that doubles numbers, records batch sizes, and refuses negative numbers."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError(f"negative item among {items}")
        return [2 * i for i in items]


async def test_items_queued_while_a_batch_runs_share_the_next_call() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    results: dict[int, int] = {}
    async with MicroBatcher(run, max_batch=4, wait_s=0) as batcher:

        async def one(i: int) -> None:
            results[i] = await batcher.submit(i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0)
            await anyio.wait_all_tasks_blocked()  # item 0 is in the worker thread, held by the gate
            for i in range(1, 7):
                tg.start_soon(one, i)
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert results == {i: 2 * i for i in range(7)}
    assert run.batches == [[0], [1, 2, 3, 4], [5, 6]]


async def test_a_forming_batch_waits_for_arriving_callers_but_a_lone_one_is_not_delayed() -> None:
    run = Recorder()
    async with MicroBatcher(run, max_batch=8, wait_s=30) as batcher:
        started = time.perf_counter()
        assert await batcher.submit(1) == 2  # nobody is arriving: no wait
        assert time.perf_counter() - started < 5

        results = []

        async def arriving(i: int, delay: int) -> None:
            with batcher.arriving() as arrival:
                for _ in range(delay):  # "decoding": yields to the loop a few times
                    await anyio.sleep(0)
                results.append(await arrival.submit(i))

        async with anyio.create_task_group() as tg:
            for i, delay in enumerate([0, 3, 6]):
                tg.start_soon(arriving, 10 + i, delay)
    assert sorted(results) == [20, 22, 24]
    assert run.batches == [[1], [10, 11, 12]]


async def test_an_arrival_that_gives_up_does_not_hold_the_batch() -> None:
    run = Recorder()
    async with MicroBatcher(run, max_batch=8, wait_s=30) as batcher:
        with batcher.arriving():
            pass  # left without submitting (e.g. its images were refused)
        started = time.perf_counter()
        assert await batcher.submit(3) == 6
        assert time.perf_counter() - started < 5


async def test_one_bad_item_fails_alone() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    outcomes: dict[int, object] = {}
    async with MicroBatcher(run, max_batch=8, wait_s=0) as batcher:

        async def one(i: int) -> None:
            try:
                outcomes[i] = await batcher.submit(i)
            except ValueError as exc:
                outcomes[i] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 100)
            await anyio.wait_all_tasks_blocked()
            for i in (1, -1, 2):
                tg.start_soon(one, i)
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert outcomes[100] == 200
    assert outcomes[1] == 2
    assert outcomes[2] == 4
    assert isinstance(outcomes[-1], ValueError)
    assert [1, -1, 2] in run.batches  # tried together first, then one by one
    assert [-1] in run.batches


async def test_a_closed_batcher_refuses_and_fails_what_it_still_held() -> None:
    batcher = MicroBatcher(Recorder(), max_batch=2)
    with pytest.raises(BatcherClosedError):
        await batcher.submit(1)
    async with batcher:
        assert batcher.running
    assert not batcher.running
    with pytest.raises(BatcherClosedError):
        await batcher.submit(1)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="wait_s"):
        MicroBatcher(Recorder(), wait_s=-1)


async def test_every_batch_runs_in_one_dedicated_thread_and_run_now_skips_the_metrics() -> None:
    threads: set[int] = set()
    batches: list[int] = []

    def run(items: list[int]) -> list[int]:
        threads.add(threading.get_ident())
        return items

    batcher = MicroBatcher(run, max_batch=2, wait_s=0, on_batch=lambda size, seconds: batches.append(size))
    with pytest.raises(BatcherClosedError):
        await batcher.run_now([1])
    async with batcher:
        assert list(await batcher.run_now([7, 8])) == [7, 8]
        for i in range(5):
            assert await batcher.submit(i) == i
    assert len(threads) == 1
    assert threading.get_ident() not in threads
    assert batches == [1] * 5
