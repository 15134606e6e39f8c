"""Chunk planning: pure functions from files' entries and clusters to chunks, tasks and start parts.

A *chunk* is an entry range on cluster boundaries: what a worker holds in memory at once. A *task* is a few
consecutive chunks of one file, read one after the other: the unit of scheduling, retries and checkpoints. A
file's *start task* opens it, plans its chunks and runs the first task's worth of them; with fewer files than
workers, a file gets several start tasks (*parts*), and part ``p`` of ``n`` reads the chunks ``p, p + n, ...``
(its *lane*). Local files smaller than a task share one (:func:`pack_files`). Nothing here reads a file or
talks to a scheduler.
"""

from __future__ import annotations

import bisect
import math
from typing import NamedTuple

#: Default target of entries per chunk; chunks follow the tree's clusters, so their sizes vary around it.
DEFAULT_CHUNKSIZE = 500_000
#: Default entries per task, in chunk sizes (``task_entries`` of :func:`processors.engine.process_files`).
TASK_CHUNKS = 2
#: What opening a GamGam file costs, counted in entries read and selected (the tree's ~80 branch descriptions
#: are deserialized; BENCHMARKS.md, Processing): the work :func:`pack_files` counts per file.
FILE_OPEN_ENTRIES = 200_000
#: Fewest compressed bytes per entry expected of a GamGam file: a local file's size over it bounds its entries,
#: so a file certain to be a single chunk is not started in parts.
MIN_BYTES_PER_ENTRY = 100


class Chunk(NamedTuple):
    """An entry range of one tree in one file."""

    file: str
    tree: str
    entry_start: int
    entry_stop: int


class FileInfo(NamedTuple):
    """Entries and cluster boundaries of one file's tree, and what identifies the file: its size in bytes and
    the ROOT file's UUID (None where unknown)."""

    file: str
    num_entries: int
    cluster_offsets: tuple[int, ...]
    size: int | None = None
    uuid: str | None = None


def plan_chunks(info: FileInfo, *, tree: str, chunksize: int, fraction: float, multiple: int = 1) -> list[Chunk]:
    """Split the first ``fraction`` of a file's entries into chunks of near-equal size on cluster boundaries.

    Args:
        info: entries and cluster offsets of the file.
        tree: tree name.
        chunksize: most entries per chunk: the share is cut into ``ceil(entries / chunksize)`` chunks, each
            cut at the cluster boundary nearest to its even share, so that no chunk is a small remainder (a
            whole task for little work, and the tail of a parallel run) and none is much larger than
            ``chunksize`` (a worker's memory follows the largest chunk, whatever the size of the data).
        fraction: share of the entries to process, from the start of the file.
        multiple: cut a multiple of this many chunks (clusters allowing), so that a file read by this many
            workers at once keeps them all busy to the end.

    Returns:
        Consecutive chunks covering ``[0, int(num_entries * fraction))``, none if that is empty.
    """
    stop = int(info.num_entries * fraction)
    if stop <= 0:
        return []
    boundaries = sorted({x for x in info.cluster_offsets if 0 < x < stop})
    count = math.ceil(math.ceil(stop / chunksize) / multiple) * multiple
    if count > len(boundaries):
        cuts = boundaries
    else:
        cuts = sorted({_nearest(boundaries, k * stop / count) for k in range(1, count)})
    edges = [0, *cuts, stop]
    return [Chunk(info.file, tree, start, end) for start, end in zip(edges, edges[1:])]


def _nearest(sorted_values: list[int], target: float) -> int:
    index = bisect.bisect_left(sorted_values, target)
    return min(sorted_values[max(index - 1, 0): index + 1], key=lambda value: abs(value - target))


def group_chunks(chunks: list[Chunk], task_entries: int | None) -> list[list[Chunk]]:
    """Cut ``chunks``, in order, into tasks of about ``task_entries`` entries: the same number of chunks each
    (the last may have fewer), the number that makes ``task_entries`` with chunks of their mean size, at least
    one (one chunk per task if ``task_entries`` is None).

    A count, not a sum: chunks are cut on cluster boundaries, so two chunks of a 2 x ``chunksize`` share come to
    a little more or less than twice ``chunksize`` and still make one task.
    """
    if not chunks or task_entries is None:
        return [[chunk] for chunk in chunks]
    mean = sum(chunk.entry_stop - chunk.entry_start for chunk in chunks) / len(chunks)
    per_task = max(1, round(task_entries / mean))
    return [chunks[start:start + per_task] for start in range(0, len(chunks), per_task)]


def lane(plan: list[Chunk], *, part: int, parts: int) -> list[Chunk]:
    """The chunks of ``plan`` that part ``part`` of ``parts`` reads: ``part, part + parts, ...``."""
    return plan[part::parts]


def first_chunks(plan: list[Chunk], *, part: int, parts: int, task_entries: int | None) -> list[Chunk]:
    """The chunks that start task ``part`` of ``parts`` runs: the first task (:func:`group_chunks`) of its
    lane; none if the plan is shorter than ``part + 1`` chunks."""
    groups = group_chunks(lane(plan, part=part, parts=parts), task_entries)
    return groups[0] if groups else []


def spread_parts(files: list[str], workers: int, *, most: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """Start tasks (file, part) for ``files``: one each, or, with fewer files than workers, up to one per worker.

    The extra parts go round the files in their order (give it largest first), at most ``most[file]`` parts
    per file (an upper bound of its chunks; no bound for a file not in it): a part beyond a file's chunk count
    would cost a worker one opening of the file for nothing.
    """
    most = most or {}
    counts = dict.fromkeys(files, 1)
    pairs = [(url, 0) for url in files]
    while len(pairs) < workers:
        more = [url for url in files if counts[url] < most.get(url, workers)][: workers - len(pairs)]
        if not more:
            break
        pairs += [(url, counts[url]) for url in more]
        for url in more:
            counts[url] += 1
    return pairs


def most_parts(size: float, *, chunksize: int, fraction: float) -> int:
    """The most start tasks worth giving a local file of ``size`` bytes: its chunks if every entry took only
    :data:`MIN_BYTES_PER_ENTRY` bytes (at least 1)."""
    return max(1, math.ceil(size / MIN_BYTES_PER_ENTRY * fraction / chunksize))


def pack_files(
    sizes: list[tuple[str, int]], *, bytes_per_entry: float, task_entries: int, fraction: float
) -> list[list[str]]:
    """Pack local files into groups of about one task's work, one start task each (first-fit decreasing).

    A file's work is its estimated entries to process (``size / bytes_per_entry * fraction``) plus
    :data:`FILE_OPEN_ENTRIES` for opening it; a group holds at most what one file of one task costs
    (``task_entries`` plus an opening), and a file bigger than that is a group of its own. Fewer tasks for the
    same files: each task costs the client, scheduler and worker a fixed few ms of CPU.

    Args:
        sizes: (file, bytes on disk) pairs; a file given twice is packed (and processed) twice.
        bytes_per_entry: bytes per entry of a file of the same data set (learned from a file already opened).
        task_entries: most entries per task.
        fraction: share of each file to process.

    Returns:
        The groups, those with the most work first.
    """
    work_of = {url: size / bytes_per_entry * fraction + FILE_OPEN_ENTRIES for url, size in sizes}
    capacity = task_entries + FILE_OPEN_ENTRIES
    groups: list[tuple[float, list[str]]] = []
    for url, _ in sorted(sizes, key=lambda pair: -pair[1]):
        work = work_of[url]
        for index, (load, members) in enumerate(groups):
            if load + work <= capacity:
                groups[index] = (load + work, [*members, url])
                break
        else:
            groups.append((work, [url]))
    return [members for _, members in sorted(groups, key=lambda group: -group[0])]


def first_starts(sizes: list[tuple[str, int | None]], *, leading: int) -> tuple[list[str], list[tuple[str, int]]]:
    """Which files start at once, and which wait to be packed (:func:`pack_files`).

    The ``leading`` largest local files start at once, largest first (give two per worker, so that none idles),
    then the files of unknown size (URLs) in their order. The other local files wait until a file is open and
    its bytes per entry say how many of them make a task's work.

    Args:
        sizes: (file, bytes on disk, or None for a URL or a file that cannot be seen).
        leading: how many local files start at once.

    Returns:
        The files to start now, and the (file, size) pairs held back, largest first.
    """
    local = sorted((pair for pair in sizes if pair[1] is not None), key=lambda pair: -pair[1])
    starting = [url for url, _ in local[:leading]] + [url for url, size in sizes if size is None]
    return starting, local[leading:]
