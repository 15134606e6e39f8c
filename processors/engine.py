"""The chunk engine: split files into cluster-aligned chunks, run a processor on each, merge the outputs.

One task opens a file, plans its chunks and processes the first task's worth of them; the further chunks
are more tasks, each of consecutive chunks, about ``task_entries`` entries (:func:`group_chunks`): the next
one for the worker that holds the file open, the others for whichever worker is free. A chunk bounds what is
in memory at once, a task what the scheduler handles: every task costs the client, scheduler and worker a
fixed 5-10 ms of CPU (benchmarks/bench_processing.py), which on a machine with a worker per core is taken
from the workers. With fewer files than workers, each worker starts at once on a part of a file
(:func:`spread_parts`), then reads that part's equal share of the file's further chunks. Local files smaller
than a task share one, in groups that shrink toward the end of the run (:func:`pack_files`). Tasks
(``client.submit``) take plain inputs and return plain results (:class:`FileStart`,
:class:`~processors.chunks.ChunkOutcome`); without a client they run in this process.
Nothing is lost silently: every chunk either contributes to the histograms or is listed in
``failed_chunks``. Finished chunks are checkpointed one file each, so an interrupted run resumes with the
missing ones; a checkpoint records what it was computed from (:class:`Checkpoint`) and is reused only for
the same file, entry range, processor configuration and project version.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import pickle
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from coffea import processor as coffea_processor
from tqdm.auto import tqdm

from processors import chunks as chunking
from processors.chunks import Chunk, ChunkOutcome, FailedChunk
from processors.errors import CertificateError, ProcessingError

#: Default target of entries per chunk; chunks follow the tree's clusters, so their sizes vary around it.
DEFAULT_CHUNKSIZE = 500_000
#: Default entries per task, in chunk sizes (``task_entries`` of :func:`process_files`).
TASK_CHUNKS = 2
#: What opening a file costs, counted in entries: deserializing the ~80 branch descriptions of a GamGam tree
#: took 28-44 ms per file, as long as reading and selecting 130k-240k events at 160-250 ns each (measured in
#: one process over the 16 files of benchmarks/bench_processing.py). Only used to pack small files into tasks.
FILE_OPEN_ENTRIES = 200_000
#: Fewest compressed bytes per entry expected of a GamGam file (the generated ones have about 170): a local
#: file's size over it bounds its entries, so a file certain to be a single chunk is not started in parts.
MIN_BYTES_PER_ENTRY = 100


class FileInfo(NamedTuple):
    """Entries and cluster boundaries of one file's tree, and what identifies the file: its size in bytes and
    the ROOT file's UUID (None where unknown)."""

    file: str
    num_entries: int
    cluster_offsets: tuple[int, ...]
    size: int | None = None
    uuid: str | None = None


def project_version() -> str:
    """The installed version of opendata-stats ("unknown" when it is not installed)."""
    try:
        return importlib.metadata.version("opendata-stats")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class OtherCheckpoints(NamedTuple):
    """Checkpoints in the directory that this run did not compute or reuse, kept as they are.

    Attributes:
        count: how many.
        reasons: what differs from this run, one short phrase each (e.g. ``"processor settings (bins 30 -> 60)"``).
    """

    count: int = 0
    reasons: tuple[str, ...] = ()


class ProcessingResult(NamedTuple):
    """Merged outcome of :func:`process_files`.

    Attributes:
        histograms: the processor's merged output, postprocessed ({"mass": Hist, "cutflow": Hist, ...}).
        events_in_files: entries in the processed share (``fraction``) of all files that could be opened.
        events_processed: entries of the chunks that succeeded.
        failed_chunks: chunks (or whole files, ``entry_stop`` None) that failed, with error and kind.
        files: the input files.
        wall_time: seconds from start to merged result.
        chunks: number of chunks planned.
        resumed_chunks: chunks taken from the checkpoint instead of being processed again.
        tasks: tasks run: one per file or group of small files, one per further chunk.
        fraction: share of each file's entries that was processed.
        entries_total: entries of all opened files, whatever the fraction.
        identity: what the result was computed from: ``files`` (path, size in bytes and ROOT UUID of each
            input, size and UUID None for a file that could not be opened), ``config`` (processor type and
            configuration, dataset, tree, fraction) and ``version`` (of opendata-stats).
        other_checkpoints: checkpoints of other inputs or settings found in ``checkpoint_dir`` and kept.
    """

    histograms: dict[str, Any]
    events_in_files: int
    events_processed: int
    failed_chunks: list[FailedChunk]
    files: list[str]
    wall_time: float
    chunks: int
    resumed_chunks: int
    tasks: int
    fraction: float
    entries_total: int
    identity: dict[str, Any] | None = None
    other_checkpoints: OtherCheckpoints = OtherCheckpoints()


def _file_size(url: str, file: Any) -> int | None:
    """Bytes of an open file: from the file system for a local one, else what its source knows."""
    try:
        return os.path.getsize(url) if not chunking.is_remote(url) else int(file.source.num_bytes)
    except Exception:  # noqa: BLE001 - a size the source cannot tell is unknown, not an error
        return None


def inspect_file(
    url: str, *, tree: str, columns: tuple[str, ...], timeout: float, max_retries: int, backoff: float = 0.5
) -> FileInfo | FailedChunk:
    """Open ``url`` and return its entries, clusters, size and UUID, or the failure (a plain Dask task).

    Transient errors are retried ``max_retries`` times, ``backoff`` seconds after the first, doubling.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            ttree = chunking.trees.get(url, tree, columns, timeout=timeout)
            offsets = tuple(int(x) for x in ttree.common_entry_offsets())
            return FileInfo(url, int(ttree.num_entries), offsets, _file_size(url, ttree.file), str(ttree.file.uuid))
        except Exception as error:  # noqa: BLE001 - classified below, unexpected ones re-raised
            chunking.trees.discard(url)
            kind, reported = chunking.classify(error, url)
            if kind == chunking.TRANSIENT and attempt <= max_retries:
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            return FailedChunk(url, 0, None, chunking.one_line(reported), kind)


class FileStart(NamedTuple):
    """What :func:`start_file` returns: the file's entries (or failure) and the outcomes of the chunks of part
    ``part`` that it ran (:func:`first_chunks`); ``worker``: the Dask worker that ran it (None in this
    process), which has the file open."""

    info: FileInfo | FailedChunk
    done: tuple[ChunkOutcome, ...] = ()
    part: int = 0
    worker: str | None = None


def start_file(
    url: str, *, tree: str, columns: tuple[str, ...], timeout: float, max_retries: int, chunksize: int,
    fraction: float, first_chunk: dict[str, Any] | None, backoff: float = 0.5, part: int = 0, parts: int = 1,
    task_entries: int | None = None,
) -> FileStart:
    """Inspect ``url`` and, unless ``first_chunk`` is None, process the first chunks of part ``part`` in the same task.

    Processing right away saves a task and a round trip per file, which matters when files hold one or a few
    chunks (the release's files do). When there are fewer files than workers, several start tasks of one file
    (``part`` 0, 1, ...) let every worker begin at once instead of after the file's plan is known.

    Args:
        url: the file.
        tree, columns, timeout, max_retries, backoff: as for :func:`inspect_file`.
        chunksize, fraction: as for :func:`plan_chunks`.
        first_chunk: keyword arguments of :func:`~processors.chunks.run_chunk` other than the chunk.
        part: whose chunks to process (:func:`first_chunks`; none if the file has fewer chunks than parts).
        parts: start tasks of this file (``multiple`` of :func:`plan_chunks`).
        task_entries: about how many entries to process (at least one chunk), as for :func:`group_chunks`.

    Returns:
        The file's entries and clusters (or its failure) and the chunks' outcomes.
    """
    info = inspect_file(url, tree=tree, columns=columns, timeout=timeout, max_retries=max_retries, backoff=backoff)
    if first_chunk is None or not isinstance(info, FileInfo):
        return FileStart(info, (), part)
    planned = plan_chunks(info, tree=tree, chunksize=chunksize, fraction=fraction, multiple=parts)
    chunks = first_chunks(planned, part=part, parts=parts, task_entries=task_entries)
    return FileStart(info, tuple(chunking.run_chunks(chunks, **first_chunk)), part)


def first_chunks(plan: list[Chunk], *, part: int, parts: int, task_entries: int | None) -> list[Chunk]:
    """The chunks that start task ``part`` of ``parts`` runs: the first task (:func:`group_chunks`) of its
    lane, the chunks ``part, part + parts, ...`` of ``plan``; none if the plan is shorter."""
    groups = group_chunks(plan[part::parts], task_entries)
    return groups[0] if groups else []


def group_chunks(chunks: list[Chunk], task_entries: int | None) -> list[list[Chunk]]:
    """Cut ``chunks``, in order, into tasks of about ``task_entries`` entries: the same number of chunks each
    (the last may have fewer), the number that makes ``task_entries`` with chunks of their mean size, at least
    one (one chunk per task if ``task_entries`` is None).

    A count, not a sum: chunks are cut on cluster boundaries, so two chunks of a 2 x ``chunksize`` share come
    to a little more or less than twice ``chunksize``. The chunks of a task are read one after another, so
    memory follows the chunk size, not the task's.
    """
    if not chunks or task_entries is None:
        return [[chunk] for chunk in chunks]
    mean = sum(chunk.entry_stop - chunk.entry_start for chunk in chunks) / len(chunks)
    per_task = max(1, round(task_entries / mean))
    return [chunks[start:start + per_task] for start in range(0, len(chunks), per_task)]


def start_files(urls: list[str], **options: Any) -> list[FileStart]:
    """:func:`start_file` for each of ``urls`` in turn, in one task (``options`` as for it), each naming the
    worker that ran it: where the file's next chunks go, without asking the scheduler (a round trip each)."""
    worker = _worker_address()
    return [start_file(url, **options)._replace(worker=worker) for url in urls]


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not in a Dask worker
        return None


def spread_parts(files: list[str], workers: int, *, most: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """Start tasks (file, part) for ``files``: one each, or, with fewer files than workers, up to one per worker.

    The extra parts go round the files in their order (give it largest first), at most ``most[file]`` parts
    per file (an upper bound of its chunks; no bound for a file not in it). A part beyond a file's chunk count
    costs a worker one opening of the file for nothing.
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
    sizes: list[tuple[str, int]], *, bytes_per_entry: float, task_entries: int, fraction: float, workers: int = 1
) -> list[list[str]]:
    """Pack local files into groups, one task each: large groups first, small ones last (guided self-scheduling).

    A file's work is its estimated entries to process (``size / bytes_per_entry * fraction``) plus
    :data:`FILE_OPEN_ENTRIES` for opening it. Each group, in turn, starts with the largest file left and adds
    the largest that fit, up to what one file of one task costs and at most a ``workers``-th of the work not
    yet packed. A file bigger than that is a group of its own. The groups run after the rest of the work, so
    the last ones set how far apart the workers finish: equal groups of up to a quarter of the work each (the
    packing before) could leave one of two workers idle for that long; shrinking ones end in single files, for
    a task or two more. On this project's 2-core machine the difference was within its noise: old / new wall
    1.01 (60 paired runs, 16 files of 2M events) and 1.03 (30 pairs, 9.4M events), 2 workers.

    Args:
        sizes: (file, bytes on disk) pairs.
        bytes_per_entry: bytes per entry of a file of the same data set (learned from a file already opened).
        task_entries: most entries per task.
        fraction: share of each file to process.
        workers: workers that share the groups.

    Returns:
        The groups, those with the most work first.
    """
    work_of = {url: size / bytes_per_entry * fraction + FILE_OPEN_ENTRIES for url, size in sizes}
    pending = [url for url, _ in sorted(sizes, key=lambda pair: -pair[1])]
    left = sum(work_of[url] for url in pending)
    groups: list[tuple[float, list[str]]] = []
    while pending:
        capacity = min(task_entries + FILE_OPEN_ENTRIES, left / workers)
        members, rest = pending[:1], []
        load = work_of[members[0]]
        for url in pending[1:]:
            if load + work_of[url] <= capacity:
                members.append(url)
                load += work_of[url]
            else:
                rest.append(url)
        groups.append((load, members))
        pending, left = rest, left - load
    return [members for _, members in sorted(groups, key=lambda group: -group[0])]


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
        Consecutive chunks covering ``[0, int(num_entries * fraction))``.
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


def _local_size(name: str) -> int | None:
    """Bytes of a local file; None for a URL or a file that cannot be seen (its task reports why)."""
    if chunking.is_remote(name):
        return None
    try:
        return os.path.getsize(name)
    except OSError:
        return None


class Checkpoint:
    """One pickle per finished chunk in a directory, each recording what it was computed from.

    A chunk's identity is its file (path, size in bytes, ROOT file UUID), tree and entry range, the processor's
    configuration and the project version; its checkpoint is named by a digest of that identity and holds it
    beside the output. :meth:`load` returns an output only for a chunk of identical identity, so a changed or
    replaced file, other settings or another version are processed again. Nothing here deletes or replaces a
    checkpoint that can be read: a run writes only the checkpoints it lacks, each atomically, and the others
    (other inputs, settings or versions) stay as they are and are reported by :meth:`others`.

    Args:
        directory: where the files live (created on the first :meth:`save`).
        config: the processor's configuration; a different one never matches old checkpoints.
        version: the project version (default: the installed one).
    """

    def __init__(self, directory: Path, *, config: dict[str, Any], version: str | None = None) -> None:
        self.directory = Path(directory)
        self.config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.version = project_version() if version is None else version
        self._used: set[Path] = set()  # checkpoints of this run's chunks, found or written
        self._unreadable: set[Path] = set()

    def identity(self, chunk: Chunk, info: FileInfo) -> dict[str, Any]:
        """What the output of ``chunk`` of the file ``info`` is computed from."""
        return {
            "file": chunk.file, "size": info.size, "uuid": info.uuid, "tree": chunk.tree,
            "entry_start": chunk.entry_start, "entry_stop": chunk.entry_stop, "config": self.config,
            "version": self.version,
        }

    def _path(self, identity: dict[str, Any]) -> Path:
        key = json.dumps(identity, sort_keys=True, default=str)
        return self.directory / f"chunk-{hashlib.sha256(key.encode()).hexdigest()[:32]}.pkl"

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        """A checkpoint's content ({"identity", "output"}), or None if it is not one."""
        try:
            with path.open("rb") as stream:
                saved = pickle.load(stream)
        except (pickle.UnpicklingError, EOFError, OSError, AttributeError, ImportError, IndexError, TypeError,
                ValueError):
            return None
        return saved if isinstance(saved, dict) and {"identity", "output"} <= saved.keys() else None

    def load(self, chunk: Chunk, info: FileInfo) -> dict[str, Any] | None:
        """The saved output of ``chunk`` (of the file ``info``), or None if none of identical identity is saved."""
        identity = self.identity(chunk, info)
        path = self._path(identity)
        if not path.exists():
            return None
        saved = self._read(path)
        if saved is None or saved["identity"] != identity:
            self._unreadable.add(path)
            return None
        self._used.add(path)
        return saved["output"]

    def save(self, chunk: Chunk, info: FileInfo, output: dict[str, Any]) -> None:
        """Save the output of ``chunk`` atomically, unless a readable checkpoint of the same identity exists."""
        identity = self.identity(chunk, info)
        path = self._path(identity)
        self._used.add(path)
        if path.exists() and path not in self._unreadable:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(prefix=".chunk-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                pickle.dump({"identity": identity, "output": output}, stream, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        self._unreadable.discard(path)

    def others(self, infos: dict[str, FileInfo]) -> OtherCheckpoints:
        """The checkpoints in the directory that are not of this run's chunks, and what differs in them.

        Args:
            infos: this run's opened files by path.
        """
        paths = sorted(set(self.directory.glob("chunk-*.pkl")) - self._used) if self.directory.is_dir() else []
        reasons: dict[str, None] = {}
        for path in paths:
            saved = self._read(path)
            identity = saved["identity"] if saved is not None and isinstance(saved["identity"], dict) else None
            reasons[_difference(identity, config=self.config, version=self.version, infos=infos)] = None
        return OtherCheckpoints(len(paths), tuple(reasons))


def _difference(identity: dict[str, Any] | None, *, config: dict[str, Any], version: str,
                infos: dict[str, FileInfo]) -> str:
    """What differs between a checkpoint's ``identity`` and this run, in a short phrase."""
    if identity is None:
        return "unreadable, or written by an older version"
    if identity.get("version") != version:
        return f"written by opendata-stats {identity.get('version')} (this is {version})"
    theirs = identity.get("config") or {}
    if theirs != config:
        changed = sorted(key for key in {*theirs, *config} if theirs.get(key) != config.get(key))
        return "processor settings (" + ", ".join(f"{key} {theirs.get(key)} -> {config.get(key)}" for key in changed) + ")"
    info = infos.get(identity.get("file"))
    if info is None:
        return "files not in this run's inputs"
    if (identity.get("size"), identity.get("uuid")) != (info.size, info.uuid):
        return f"{Path(info.file).name} has changed (size {identity.get('size')} -> {info.size}, UUID {identity.get('uuid')} -> {info.uuid})"
    return "other entry ranges (another --fraction or --chunksize)"


class _Tasks:
    """Runs file inspections and chunk tasks, on a Dask client or eagerly in this process.

    A file's chunks are submitted as soon as it is inspected, so processing starts before the last file is
    opened; ``near`` places a task on the worker that opened the file (and keeps the tree in its
    :data:`~processors.chunks.trees` cache) without forbidding the others.
    """

    def __init__(self, client: Any, *, progress: bool) -> None:
        self.client = client
        # Eager mode: (kind, item, call); tasks placed near a finished one run first, like Dask's priority.
        self._pending: list[tuple[str, Any, Any]] = []
        self._first: list[tuple[str, Any, Any]] = []
        self._futures: dict[Any, tuple[str, Any]] = {}
        self._completed: Any = None
        self.submitted = 0
        self.bar = tqdm(total=0, unit="task", disable=not progress, desc="processing")
        if client is not None:
            from distributed import as_completed

            # Results are fetched in the background as tasks finish, not one round trip at a time in the loop.
            self._completed = as_completed(with_results=True, raise_errors=False)

    def workers(self) -> int:
        """Workers there are now (1 in this process; at least 1 while an adaptive cluster has none yet)."""
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def holders(self, future: Any) -> list[str] | None:
        """The workers holding a finished ``future``'s result (None in this process): where its file's next chunk goes."""
        if self.client is None:
            return None
        return [address for addresses in self.client.who_has([future]).values() for address in addresses] or None

    def submit(self, kind: str, item: Any, function: Any, *, near: list[str] | None = None, follow_up: bool = False,
               label: Any = None, **kwargs: Any) -> None:
        """Queue ``function(item, **kwargs)``; ``near``: preferred workers; ``follow_up``: run before new files;
        ``label``: what :meth:`results` yields for the task (default ``item``)."""
        label = item if label is None else label
        self.submitted += 1
        self.bar.total += 1
        self.bar.refresh()
        if self.client is None:
            (self._first if follow_up else self._pending).append((kind, label, lambda: function(item, **kwargs)))
            return
        placement = {"workers": near, "allow_other_workers": True} if near else {}
        future = self.client.submit(function, item, pure=False, priority=int(follow_up), **placement, **kwargs)
        self._futures[future] = (kind, label)
        self._completed.add(future)

    def results(self) -> Iterator[tuple[str, Any, Any, Any]]:
        """Yield (kind, item, result or exception, future) as tasks finish; submitting more is allowed."""
        try:
            if self.client is None:
                while self._first or self._pending:
                    kind, item, call = (self._first or self._pending).pop(0)
                    yield kind, item, call(), self  # a stand-in for the future: "this process"
                    self.bar.update()
                return
            for future, result in self._completed:
                kind, item = self._futures.pop(future)
                if future.status == "error":  # a worker died too often (KilledWorker) or similar
                    result = result[1]  # as_completed gives (type, exception, traceback)
                yield kind, item, result, future
                future.release()
                self.bar.update()
        finally:
            self.cancel()
            self.bar.close()

    def cancel(self) -> None:
        """Drop every task not yet finished (after a fatal error)."""
        self._pending.clear()
        self._first.clear()
        if self._futures:
            self.client.cancel(list(self._futures))
            self._futures.clear()


def process_files(
    files: Iterable[str | os.PathLike[str]],
    *,
    processor: coffea_processor.ProcessorABC,
    client: Any = None,
    tree: str = "analysis",
    chunksize: int = DEFAULT_CHUNKSIZE,
    task_entries: int | None = None,
    fraction: float = 1.0,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 60.0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    dataset: str = "data",
    strict: bool = True,
) -> ProcessingResult:
    """Run ``processor`` over ``files`` chunk by chunk and merge the outputs.

    Args:
        files: ROOT files (local paths or root:// / https:// URLs).
        processor: a ProcessorABC with ``columns`` (branches to read), ``config()`` (plain keyword
            arguments that rebuild it on the workers) and ``empty_output()``.
        client: a ``distributed.Client``; None runs every chunk in this process.
        tree: name of the tree.
        chunksize: target entries per chunk (clusters are never split): what a worker holds in memory at once.
        task_entries: about how many entries per task, in consecutive chunks of a file (at least one); default
            :data:`TASK_CHUNKS` chunk sizes. A task is the unit of scheduling and of retries; its chunks are
            checkpointed when it returns.
        fraction: share of each file to process, from its start (the tutorial's ``fraction``).
        retries: attempts after the first for transient (network) errors, with doubling back-off.
        backoff: seconds before the first retry (then 2x, 4x, ...): retries x back-off must outlast an outage.
        timeout: seconds for each remote read.
        checkpoint_dir: directory for one checkpoint file per finished chunk (:class:`Checkpoint`); the
            checkpoints already there are never deleted or replaced, whatever they were computed from.
        resume: reuse the checkpoints in ``checkpoint_dir`` of identical identity (same file path, size and
            UUID, entry range, processor configuration and project version) and process only the other chunks.
        progress: show a progress bar.
        dataset: the name in ``events.metadata["dataset"]`` and on the histograms' dataset axis.
        strict: raise on a file that is missing, not ROOT, or lacks the tree or branches; if False,
            list it in ``failed_chunks`` and go on.

    Returns:
        The merged histograms, event counts and failed chunks.

    Raises:
        ProcessingError: no files, bad options, or (with ``strict``) a bad input file.
        CertificateError: an https server's certificate is not trusted (whatever ``strict``).
    """
    started = time.perf_counter()
    files = [os.fspath(f) for f in files]
    if not files:
        raise ProcessingError("no input files")
    if not 0.0 < fraction <= 1.0:
        raise ProcessingError(f"fraction must be in (0, 1], got {fraction}")
    if chunksize < 1:
        raise ProcessingError(f"chunksize must be positive, got {chunksize}")
    task_entries = TASK_CHUNKS * chunksize if task_entries is None else task_entries
    if task_entries < 1:
        raise ProcessingError(f"task_entries must be positive, got {task_entries}")
    if retries < 0 or backoff < 0:
        raise ProcessingError(f"retries and backoff must not be negative, got {retries} and {backoff}")
    if resume and checkpoint_dir is None:
        raise ProcessingError("resume needs a checkpoint directory")
    columns = tuple(processor.columns)
    config = processor.config()
    settings = {"type": type(processor).__qualname__, **config, "dataset": dataset}
    checkpoint = Checkpoint(Path(checkpoint_dir), config=settings) if checkpoint_dir is not None else None
    failed: list[FailedChunk] = []
    infos: list[FileInfo] = []
    info_of: dict[str, FileInfo] = {}  # the opened files, by path: their identity keys their checkpoints
    outputs: list[dict[str, Any]] = []
    planned = resumed = events_processed = 0
    chunk_options = dict(
        processor_type=type(processor), processor_config=config, dataset=dataset, timeout=timeout, max_retries=retries,
        backoff=backoff,
    )

    def take(chunk: Chunk, outcome: ChunkOutcome | BaseException) -> None:
        nonlocal events_processed
        if isinstance(outcome, BaseException):
            failed.append(FailedChunk(chunk.file, chunk.entry_start, chunk.entry_stop, chunking.one_line(outcome), chunking.WORKER))
        elif outcome.failure is not None:
            failed.append(outcome.failure)
        else:
            outputs.append(outcome.output)
            events_processed += outcome.output["events"]
            if checkpoint is not None:
                checkpoint.save(chunk, info_of[chunk.file], outcome.output)

    tasks = _Tasks(client, progress=progress)
    start_options = dict(
        tree=tree, columns=columns, timeout=timeout, max_retries=retries, backoff=backoff, chunksize=chunksize,
        fraction=fraction, task_entries=task_entries,
        # On resume the first chunk may be checkpointed already: then every chunk waits for the plan.
        first_chunk=None if resume else chunk_options,
    )
    # URLs, and the largest local files (two per worker, so none idles), start at once, one task each. The other
    # local files wait for the first file opened: its bytes per entry say how many of them make one chunk's work.
    sizes = [(url, _local_size(url)) for url in files]
    local = sorted((pair for pair in sizes if pair[1] is not None), key=lambda pair: -pair[1])
    workers = tasks.workers()
    leading = 2 * workers
    held, local_size, unopened = local[leading:], dict(local), 0

    def submit_files(group: list[str], part: int = 0) -> None:
        nonlocal unopened
        unopened += len(group)
        tasks.submit("files", group, start_files, label=(group, part), part=part, parts=parts.get(group[0], 1),
                     **start_options)

    def submit_chunks(group: list[Chunk], *, near: list[str] | None = None) -> None:
        """One task of further chunks of a file already planned, ahead of files not yet started."""
        tasks.submit("chunks", tuple(group), chunking.run_chunks, near=near, follow_up=True, **chunk_options)

    def where(start: FileStart, future: Any) -> list[str] | None:
        """The worker that ran ``start`` (it has the file open), or the holders of its result (then asked)."""
        return [start.worker] if start.worker is not None else tasks.holders(future)

    def release_held(info: FileInfo | None) -> None:
        nonlocal held
        size = local_size.get(info.file) if info is not None else None
        if not held or (info is not None and not (size and info.num_entries)):
            return
        if info is None:
            groups = [[url] for url, _ in held]  # no file could be opened to learn from
        else:
            groups = pack_files(held, bytes_per_entry=size / info.num_entries, task_entries=task_entries,
                                fraction=fraction, workers=workers)
        held = []
        for group in groups:
            submit_files(group)

    starting = [url for url, _ in [*local[:leading], *(pair for pair in sizes if pair[1] is None)]]
    # Fewer files than workers (one large file, a facility with more cores than files): each worker starts a
    # part of a file at once, instead of idling until a file's plan is known. Not on resume: nothing to start.
    most = {url: most_parts(size, chunksize=chunksize, fraction=fraction) for url, size in local}
    spread = spread_parts(starting, workers, most=most) if not resume and len(set(files)) == len(files) else []
    parts = collections.Counter(url for url, _ in spread)
    firsts: dict[str, dict[int, list[Chunk]]] = {}  # files started in parts, once one is back: what each part runs
    dropped: set[str] = set()  # files started in several parts whose first part to return failed
    lanes: dict[tuple[str, int], list[list[Chunk]]] = {}  # (file, part): its further tasks, sent when the part answers
    for url, part in spread or [(url, 0) for url in starting]:
        submit_files([url], part)

    for kind, item, result, future in tasks.results():
        if kind == "chunks":
            for chunk, outcome in zip(item, [result] * len(item) if isinstance(result, BaseException) else result):
                take(chunk, outcome)
            continue
        group, part = item
        unopened -= len(group)
        starts = [FileStart(FailedChunk(url, 0, None, chunking.one_line(result), chunking.WORKER), (), part)
                  for url in group] if isinstance(result, BaseException) else result
        holders = None  # asked once per task, when a file's first further task is submitted
        for start in starts:
            url = start.info.file
            in_parts = parts.get(url, 1)  # start tasks of this file
            if url in dropped:
                continue  # listed as failed as a whole already
            if url in firsts:  # a further part of a file already planned
                ran = firsts[url][start.part]
                if isinstance(start.info, FailedChunk):  # its chunks were not run: run them on their own
                    if ran:
                        submit_chunks(ran)
                else:
                    for chunk, outcome in zip(ran, start.done):
                        take(chunk, outcome)
                lane = lanes.pop((url, start.part), [])
                near = None if isinstance(start.info, FailedChunk) or not lane else where(start, future)
                for tasked in lane:
                    submit_chunks(tasked, near=near)
                continue
            if isinstance(start.info, FailedChunk):
                if start.info.kind == chunking.CERTIFICATE:  # every file of that server would fail the same way
                    raise CertificateError(start.info.error, url)
                if strict and start.info.kind in (chunking.MISSING, chunking.CORRUPT, chunking.SCHEMA):
                    raise ProcessingError(start.info.error)
                failed.append(start.info)
                if in_parts > 1:
                    dropped.add(url)
                continue
            infos.append(start.info)
            info_of[url] = start.info
            release_held(start.info)
            plan = plan_chunks(start.info, tree=tree, chunksize=chunksize, fraction=fraction, multiple=in_parts)
            planned += len(plan)
            # What each start task of this file runs (nothing on resume), as start_file picks it.
            first = {p: [] if resume else first_chunks(plan, part=p, parts=in_parts, task_entries=task_entries)
                     for p in range(in_parts)}
            if in_parts > 1:
                firsts[url] = first
            for chunk, outcome in zip(first[start.part], start.done):
                take(chunk, outcome)
            for p in range(in_parts):
                rest = []
                for chunk in plan[p::in_parts][len(first[p]):]:  # a start task runs the head of its lane
                    saved = checkpoint.load(chunk, start.info) if checkpoint is not None and resume else None
                    if saved is not None:
                        outputs.append(saved)
                        events_processed += saved["events"]
                        resumed += 1
                    else:
                        rest.append(chunk)
                tasked = group_chunks(rest, task_entries)
                # A file read in parts: chunk k is part k % parts's, run by the worker that read that part (it has
                # the file open), submitted when the part answers. Each worker gets an equal share; left to Dask, a
                # worker still reading its part looks busier than it is, and one worker got 3 of 4 (task streams).
                if p != start.part:
                    lanes[(url, p)] = tasked
                    continue
                # Otherwise the worker holding the file open runs its next task; any further task goes to whichever
                # worker is free first (which opens the file too, once): pinning them all would leave workers idle
                # while a few large files are read, and use one worker per file on a facility with more cores than
                # files.
                for number, chunks in enumerate(tasked):
                    near = None
                    if in_parts > 1 or number == 0:
                        holders = holders or where(start, future)
                        near = holders
                    submit_chunks(chunks, near=near)
        if unopened == 0:
            release_held(None)

    if client is None:
        chunking.trees.clear()  # leave no file open in the caller's process
    histograms = processor.postprocess(coffea_processor.accumulate(outputs, processor.empty_output()))
    failed.sort(key=lambda f: (files.index(f.file) if f.file in files else len(files), f.entry_start))
    identity = {
        "files": [
            {"file": url, "size": info_of[url].size, "uuid": info_of[url].uuid} if url in info_of
            else {"file": url, "size": _local_size(url), "uuid": None}
            for url in files
        ],
        "config": {**settings, "tree": tree, "fraction": fraction},
        "version": checkpoint.version if checkpoint is not None else project_version(),
    }
    return ProcessingResult(
        histograms=histograms,
        events_in_files=sum(int(info.num_entries * fraction) for info in infos),
        events_processed=int(events_processed),
        failed_chunks=failed,
        files=files,
        wall_time=time.perf_counter() - started,
        chunks=planned,
        resumed_chunks=resumed,
        tasks=tasks.submitted,
        fraction=fraction,
        entries_total=sum(info.num_entries for info in infos),
        identity=json.loads(json.dumps(identity, default=str)),
        other_checkpoints=checkpoint.others(info_of) if checkpoint is not None else OtherCheckpoints(),
    )
