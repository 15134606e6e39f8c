"""The generator's progress bar: its total is fixed first, and it moves cluster by cluster, in this process and
from a pool of writers."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from _progress_bars import RecordingBar

import processors.generate as generate
import processors.progress
from processors.generate import generate_dataset, rootfile

PERIODS = ["data15_periodD", "data15_periodE"]


@pytest.mark.slow  # the truth's expectations take seconds in each new process
@pytest.mark.parametrize("workers", [1, 2])
def test_the_bar_counts_every_generated_event_cluster_by_cluster(tmp_path, monkeypatch, workers):
    bars = RecordingBar.install(monkeypatch, processors.progress)
    dataset = generate_dataset(tmp_path, events=24_000, periods=PERIODS, basket_entries=2_000, workers=workers,
                               mc=True, mc_events=6_000, progress=True)
    [bar] = bars
    samples = dataset.truth["simulation"]["samples"]
    total = dataset.truth["background_events"] + 6_000 * len(samples)
    assert dataset.truth["background_events"] == 24_000 and len(samples) == 3
    assert bar.total == total and set(bar.totals_at_updates) == {total}
    # One update per cluster of 2,000 generated events (from a pool, a few may arrive together).
    assert len(bar.steps) >= (total // 2_000) // (2 if workers > 1 else 1)
    assert sum(bar.steps) == total and min(bar.steps) >= 0 and bar.closed


class Task(NamedTuple):
    path: str
    clusters: tuple[int, ...]


def write_clusters(task: Task) -> Task:
    """A writer of clusters of the given sizes, reporting each as the real writers do."""
    for size in task.clusters:
        rootfile._written(size)
    return task


def test_each_cluster_moves_the_bar_and_only_while_writing():
    bar = RecordingBar(total=19)
    tasks = [Task("a", (5, 5, 2)), Task("b", (7,))]
    assert generate._write_all(write_clusters, tasks, 1, bar) == tasks
    assert bar.steps == [5, 5, 2, 7]
    rootfile._written(3)  # the reporting ends with the writing
    assert bar.steps == [5, 5, 2, 7]
    assert generate._write_all(write_clusters, tasks, 1, None) == tasks  # no bar: nobody is told
    assert bar.steps == [5, 5, 2, 7]
