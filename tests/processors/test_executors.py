"""The executor protocol: submit tasks, take them as they finish, submit more meanwhile; in this process and on Dask.

Both executors run the same chunk tasks to the same histograms (as hist's tests compare its Dask and eager fills).
"""

from __future__ import annotations

import operator

import pytest
from _photon_files import write_photon_file
from coffea.processor import accumulate

from processors.chunks import inspect_file, run_chunks
from processors.executors import DaskExecutor, Done, InProcessExecutor, executor_for
from processors.planning import group_chunks, plan_chunks
from processors.processor import DiphotonProcessor

COLUMNS = tuple(DiphotonProcessor.columns)
OPTIONS = dict(processor_type=DiphotonProcessor, processor_config={}, dataset="data", timeout=5, max_retries=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("executors")
    return [str(write_photon_file(directory / f"e{i}.root", n, seed=20 + i, parts=4)) for i, n in enumerate((8_000, 6_000))]


def fails(message: str) -> None:
    raise ValueError(message)


def test_in_process_tasks_run_by_priority_then_in_order_and_more_can_be_submitted():
    executor, seen = InProcessExecutor(), []
    for name in ("a", "b"):
        executor.submit(name, str.upper, name)
    for done in executor.as_completed():
        seen.append(done.value)
        if done.task == "a":  # submitted while running: a follow-up goes before "b"
            executor.submit("follow-up", operator.add, "a", "+", priority=1)
    assert seen == ["A", "a+", "B"] and executor.submitted == 3


def test_a_task_that_raises_is_a_failed_result_and_an_interrupt_ends_the_run():
    executor = InProcessExecutor()
    executor.submit("bad", fails, "broken")
    [done] = list(executor.as_completed())
    assert done.failed and isinstance(done.value, ValueError) and str(done.value) == "broken"
    assert not Done("ok", 1).failed

    def interrupted():
        raise KeyboardInterrupt

    executor.submit("stop", interrupted)
    executor.submit("never", str, 1)
    with pytest.raises(KeyboardInterrupt), executor:
        list(executor.as_completed())
    assert list(executor.as_completed()) == []  # the context dropped what was left


@pytest.mark.slow
def test_dask_follows_the_same_protocol(client):
    executor = executor_for(client)
    assert isinstance(executor, DaskExecutor) and isinstance(executor_for(None), InProcessExecutor)
    assert executor.workers() == 2
    with executor:
        executor.submit("up", str.upper, "a")
        executor.submit("bad", fails, "broken")
        results = {}
        for done in executor.as_completed():
            results[done.task] = done
            if done.task == "up":
                assert executor.holders(done)  # the worker that holds it
                executor.submit("more", operator.add, 1, 2, near=executor.holders(done), priority=1)
    assert results["up"].value == "A" and results["more"].value == 3
    assert results["bad"].failed and isinstance(results["bad"].value, ValueError)
    assert executor.submitted == 3


def chunk_tasks(files):
    plan = []
    for name in files:
        info = inspect_file(name, tree="analysis", columns=COLUMNS, timeout=5, max_retries=0)
        plan += plan_chunks(info, tree="analysis", chunksize=1, fraction=1.0)
    return plan, group_chunks(plan, 4_000)


def run_everywhere(executor, files):
    """Every chunk of ``files`` as tasks of ``executor``, merged as the results arrive."""
    plan, tasks = chunk_tasks(files)
    merged, seen = DiphotonProcessor().empty_output(), []
    with executor:
        for number, task in enumerate(tasks):
            executor.submit(number, run_chunks, task, **OPTIONS)
        for done in executor.as_completed():
            assert not done.failed
            for outcome in done.value:
                seen.append(outcome.chunk)
                merged = accumulate([outcome.output], merged)
    assert sorted(seen) == sorted(plan)  # every chunk once
    return merged


def test_in_process_and_dask_give_the_same_histograms(files, client):
    eager = run_everywhere(InProcessExecutor(), files)
    distributed = run_everywhere(DaskExecutor(client), files)
    assert eager["events"] == distributed["events"] == 14_000
    assert eager["mass"] == distributed["mass"] and eager["cutflow"] == distributed["cutflow"]
    assert eager["mass"].sum() > 0
