"""Chunk planning: pure functions, checked on examples and, over many random layouts, by their invariants."""

from __future__ import annotations

import random

import pytest

from processors.planning import (
    FILE_OPEN_ENTRIES,
    MIN_BYTES_PER_ENTRY,
    Chunk,
    FileInfo,
    first_chunks,
    first_starts,
    group_chunks,
    lane,
    most_parts,
    pack_files,
    plan_chunks,
    spread_parts,
)


def test_chunks_follow_clusters_and_cover_the_share():
    info = FileInfo("f.root", 1000, (0, 300, 600, 900, 1000))
    assert [(c.entry_start, c.entry_stop) for c in plan_chunks(info, tree="t", chunksize=500, fraction=1.0)] == [
        (0, 600), (600, 1000)
    ]
    assert [(c.entry_start, c.entry_stop) for c in plan_chunks(info, tree="t", chunksize=1, fraction=0.5)] == [
        (0, 300), (300, 500)
    ]
    # A file read by two workers at once is cut into an even number of chunks, each at most chunksize.
    fine = FileInfo("f.root", 1000, tuple(range(0, 1001, 50)))
    cut = [(c.entry_start, c.entry_stop) for c in plan_chunks(fine, tree="t", chunksize=400, fraction=1.0, multiple=2)]
    assert cut == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert len(plan_chunks(fine, tree="t", chunksize=400, fraction=1.0)) == 3


def _ranges(groups):
    return [[(c.entry_start, c.entry_stop) for c in group] for group in groups]


def test_chunks_are_grouped_into_tasks_of_consecutive_chunks():
    chunks_ = [Chunk("f", "t", a, b) for a, b in [(0, 300), (300, 600), (600, 1000), (1000, 1100), (1100, 1200)]]
    # Chunks of 240 entries on average: 700 entries make three per task, 250 one; None: one chunk per task.
    assert _ranges(group_chunks(chunks_, 700)) == [[(0, 300), (300, 600), (600, 1000)], [(1000, 1100), (1100, 1200)]]
    singles = [[r] for r in [(0, 300), (300, 600), (600, 1000), (1000, 1100), (1100, 1200)]]
    assert _ranges(group_chunks(chunks_, 250)) == _ranges(group_chunks(chunks_, 1)) == _ranges(group_chunks(chunks_, None)) == singles
    # Two chunks of a little more than half the task's entries still make one task.
    near_half = [Chunk("f", "t", 0, 500_300), Chunk("f", "t", 500_300, 1_000_500), Chunk("f", "t", 1_000_500, 1_400_000)]
    assert [len(g) for g in group_chunks(near_half, 1_000_000)] == [2, 1]
    assert group_chunks([], 10) == []


def test_a_start_task_runs_the_first_task_of_its_lane():
    plan = [Chunk("f", "t", 100 * k, 100 * (k + 1)) for k in range(8)]
    assert _ranges([first_chunks(plan, part=0, parts=2, task_entries=250)]) == [[(0, 100), (200, 300)]]
    assert _ranges([first_chunks(plan, part=1, parts=2, task_entries=250)]) == [[(100, 200), (300, 400)]]
    assert _ranges([first_chunks(plan, part=0, parts=1, task_entries=None)]) == [[(0, 100)]]
    assert first_chunks(plan[:4], part=5, parts=8, task_entries=250) == []


def test_fewer_files_than_workers_start_one_part_per_worker():
    assert spread_parts(["a", "b"], 5) == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert spread_parts(["a", "b", "c"], 2) == [("a", 0), ("b", 0), ("c", 0)]
    assert spread_parts([], 4) == []
    # No more parts than a file can have chunks: the others go to the files without a bound.
    assert spread_parts(["a", "b"], 5, most={"a": 1}) == [("a", 0), ("b", 0), ("b", 1), ("b", 2), ("b", 3)]
    assert spread_parts(["a", "b"], 5, most={"a": 2, "b": 1}) == [("a", 0), ("b", 0), ("a", 1)]


def test_lanes_share_a_plan_out_and_a_start_task_runs_the_head_of_its_own():
    plan = [Chunk("f", "t", 100 * k, 100 * (k + 1)) for k in range(7)]
    lanes = [lane(plan, part=part, parts=3) for part in range(3)]
    assert sorted(c for chunks in lanes for c in chunks) == plan  # every chunk in exactly one lane
    assert [c.entry_start for c in lanes[1]] == [100, 400]
    for part in range(3):
        head = first_chunks(plan, part=part, parts=3, task_entries=250)
        assert head == lanes[part][: len(head)]


def test_the_largest_local_files_and_the_urls_start_at_once_the_others_wait_to_be_packed():
    sizes = [("root://a", None), ("small", 10), ("https://b", None), ("large", 30), ("mid", 20), ("tiny", 5)]
    assert first_starts(sizes, leading=2) == (["large", "mid", "root://a", "https://b"], [("small", 10), ("tiny", 5)])
    assert first_starts(sizes, leading=10) == (["large", "mid", "small", "tiny", "root://a", "https://b"], [])
    assert first_starts([], leading=2) == ([], [])


def test_small_files_are_packed_into_about_one_task_of_work():
    # 1 byte = 1000 entries; one task's work is 500k entries plus 200k for opening the file: 700k.
    sizes = [("a", 900), ("b", 500), ("c", 300), ("d", 200), ("e", 100)]
    assert pack_files(sizes, bytes_per_entry=1e-3, task_entries=500_000, fraction=1.0) == [["a"], ["b"], ["d", "e"], ["c"]]
    assert pack_files(sizes, bytes_per_entry=1e-3, task_entries=500_000, fraction=0.5) == [["b", "e"], ["a"], ["c", "d"]]
    twice = pack_files([("x", 10), ("x", 10)] * 2, bytes_per_entry=1e-3, task_entries=500_000, fraction=1.0)
    assert twice == [["x", "x", "x"], ["x"]]  # a file given twice is processed twice, as without packing


@pytest.mark.parametrize("seed", range(100))
def test_every_file_is_packed_once_into_groups_of_at_most_a_tasks_work(seed):
    rng = random.Random(seed)
    sizes = [(f"f{k}", rng.randint(1, 2_000)) for k in range(rng.randint(1, 30))]
    options = dict(bytes_per_entry=rng.choice([1e-3, 1e-2]), task_entries=rng.randint(1, 2_000_000),
                   fraction=rng.choice([1.0, 0.5]))
    groups = pack_files(sizes, **options)
    assert sorted(url for group in groups for url in group) == sorted(url for url, _ in sizes)
    work = {url: size / options["bytes_per_entry"] * options["fraction"] + FILE_OPEN_ENTRIES for url, size in sizes}
    loads = [sum(work[url] for url in group) for group in groups]
    capacity = options["task_entries"] + FILE_OPEN_ENTRIES
    assert all(load <= capacity * (1 + 1e-12) or len(group) == 1 for load, group in zip(loads, groups))
    assert loads == sorted(loads, reverse=True)
    # First fit: no two groups could have been one.
    assert all(a + b > capacity for i, a in enumerate(loads) for b in loads[i + 1:])


def test_a_file_gets_no_more_parts_than_it_can_have_chunks():
    assert most_parts(0, chunksize=1000, fraction=1.0) == 1
    assert most_parts(MIN_BYTES_PER_ENTRY * 1000, chunksize=1000, fraction=1.0) == 1
    assert most_parts(MIN_BYTES_PER_ENTRY * 1001, chunksize=1000, fraction=1.0) == 2
    assert most_parts(MIN_BYTES_PER_ENTRY * 4000, chunksize=1000, fraction=0.5) == 2


def random_file(rng: random.Random) -> FileInfo:
    entries = rng.randint(0, 50_000)
    clusters = sorted({0, entries, *(rng.randint(0, entries) for _ in range(rng.randint(0, 40)))})
    return FileInfo("f.root", entries, tuple(clusters))


@pytest.mark.parametrize("seed", range(200))
def test_plans_tile_the_share_on_cluster_boundaries_and_every_chunk_is_run_once(seed):
    rng = random.Random(seed)
    info = random_file(rng)
    chunksize, fraction, parts = rng.randint(1, 20_000), rng.choice([1.0, 0.5, 0.33, 1e-3]), rng.randint(1, 5)
    task_entries = rng.choice([None, 1, rng.randint(1, 60_000)])
    plan = plan_chunks(info, tree="t", chunksize=chunksize, fraction=fraction, multiple=parts)
    stop = int(info.num_entries * fraction)
    # The chunks tile [0, stop), cut only where a cluster starts.
    assert [c.entry_start for c in plan[1:]] == [c.entry_stop for c in plan[:-1]]
    assert (plan[0].entry_start, plan[-1].entry_stop) == (0, stop) if stop > 0 else plan == []
    assert all(c.entry_start < c.entry_stop for c in plan)
    assert all(c.entry_start in info.cluster_offsets for c in plan[1:])
    # Whatever the parts and task size: each chunk in one lane, each lane's tasks its chunks in order, once.
    runs = []
    for part in range(parts):
        tasks = group_chunks(lane(plan, part=part, parts=parts), task_entries)
        assert [c for task in tasks for c in task] == lane(plan, part=part, parts=parts)
        assert tasks[:1] == ([first_chunks(plan, part=part, parts=parts, task_entries=task_entries)] if tasks else [])
        runs += [c for task in tasks for c in task]
    assert sorted(runs) == sorted(plan) and len(set(runs)) == len(runs)


@pytest.mark.parametrize("seed", range(50))
def test_spread_parts_start_every_file_once_and_no_part_twice(seed):
    rng = random.Random(seed)
    files = [f"f{k}" for k in range(rng.randint(0, 6))]
    workers = rng.randint(1, 12)
    most = {name: rng.randint(1, 4) for name in files if rng.random() < 0.5}
    pairs = spread_parts(files, workers, most=most)
    assert len(set(pairs)) == len(pairs) and [p for p in pairs if p[1] == 0] == [(name, 0) for name in files]
    for name in files:  # a file's parts are 0, 1, ..., within its bound
        numbers = sorted(part for other, part in pairs if other == name)
        assert numbers == list(range(len(numbers))) and len(numbers) <= most.get(name, workers)
    assert len(pairs) == len(files) or len(pairs) <= workers
