"""The run: a processor over files, chunk by chunk, on an executor, with checkpoints and an exact account of failures.

:func:`process_files` is the entry point; a :class:`Run` holds one call's state. The parts it uses each have a
module of their own: chunk planning (:mod:`processors.planning`), the tasks that read files
(:mod:`processors.chunks`), the executor (:mod:`processors.executors`), checkpoints (:mod:`processors.checkpoint`)
and the failure model (:mod:`processors.failures`).

A start task opens a file, plans its chunks and runs the first task's worth of them. URLs and the largest local
files start at once (a file in several parts when there are fewer files than workers); the other local files
wait until the first file is open, then start packed into shared tasks of about one task's work. As each start
task answers, the file's further chunks are submitted in tasks of consecutive chunks, ahead of the files not
yet started: the next task of each part to the worker that has the file open, the others to whichever worker is
free. Outputs are merged into one as they arrive. Every chunk either contributes to the histograms once or is
listed in ``failed_chunks``.
"""

from __future__ import annotations

import collections
import enum
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from coffea import processor as coffea_processor
from tqdm.auto import tqdm

from processors import chunks as reading
from processors.checkpoint import Checkpointer, DirectoryCheckpointer, OtherCheckpoints, project_version
from processors.errors import CertificateError, ProcessingError
from processors.executors import Done, Executor, executor_for
from processors.datasets import is_remote
from processors.failures import FailedChunk, FailureKind, worker_failure
from processors.planning import (
    DEFAULT_CHUNKSIZE,
    FILE_OPEN_ENTRIES,
    TASK_CHUNKS,
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
from processors.tuning import configure_uproot

# Imported from here by deploy/, the benchmarks and tests: the planning functions, the file inspection.
inspect_file = reading.inspect_file
__all__ = ["DEFAULT_CHUNKSIZE", "FILE_OPEN_ENTRIES", "TASK_CHUNKS", "FileInfo", "ProcessingResult", "Run", "TaskKind",
           "group_chunks", "inspect_file", "most_parts", "pack_files", "plan_chunks", "process_files", "spread_parts"]


class ProcessingResult(NamedTuple):
    """Merged outcome of :func:`process_files`.

    Attributes:
        histograms: the processor's merged output, postprocessed ({"mass": Hist, "cutflow": Hist, ...}).
        events_in_files: entries in the processed share (``fraction``) of all files that could be opened.
        events_processed: entries of the chunks that succeeded.
        failed_chunks: chunks (or whole files, ``entry_stop`` None) that failed, with error and kind, in the
            order of ``files`` and entries.
        files: the input files.
        wall_time: seconds from start to merged result.
        chunks: number of chunks planned.
        resumed_chunks: chunks taken from the checkpoint instead of being processed again.
        tasks: tasks run: start tasks and tasks of further chunks.
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


class TaskKind(enum.Enum):
    """What a task of a run does."""

    #: Open files, plan their chunks and run the first task's worth of one part (:func:`processors.chunks.start_files`).
    START = "start"
    #: Run further chunks of a planned file (:func:`processors.chunks.run_chunks`).
    CHUNKS = "chunks"


class Task(NamedTuple):
    """A submitted task, as the run knows it: ``files`` and ``part`` of a start task, ``chunks`` of the others."""

    kind: TaskKind
    files: tuple[str, ...] = ()
    part: int = 0
    chunks: tuple[Chunk, ...] = ()


class Settings(NamedTuple):
    """The options of a run that its tasks need (see :func:`process_files`)."""

    tree: str
    chunksize: int
    task_entries: int
    fraction: float
    retries: int
    backoff: float
    timeout: float
    resume: bool
    strict: bool
    dataset: str


class SplitFile:
    """A file started in several parts, between its first answer and its last.

    Attributes:
        parts: its start tasks.
        planned: True once one part answered with the file's plan.
        dropped: True if the first part to answer failed: the file is listed as failed as a whole.
        first: what each part's start task runs (from the plan).
        lanes: each part's further tasks, submitted when that part answers (to the worker that read it).
    """

    def __init__(self, parts: int) -> None:
        self.parts = parts
        self.planned = False
        self.dropped = False
        self.first: dict[int, list[Chunk]] = {}
        self.lanes: dict[int, list[list[Chunk]]] = {}


class ProgressBar:
    """The processing bar: its total is fixed from the file list before anything runs, so it never grows.

    Each file weighs its size in bytes when every file is a local one whose size is known (the bar counts bytes, so
    its rate and remaining time follow the reading), else one file. A file moves the bar by its weight in all: in shares as its chunks finish (processed, failed or resumed alike, each by its
    share of the file's planned entries), or at once when it fails to open or has nothing to read. The events
    processed so far are shown beside the bar.

    Args:
        files: the run's input files (each once: :func:`process_files` refuses a file listed twice).
        progress: draw the bar (otherwise it only counts, in :attr:`done`).
    """

    def __init__(self, files: list[str], *, progress: bool) -> None:
        sizes = {url: _local_size(url) for url in files}
        in_bytes = all(sizes.values())
        #: Weight of each file.
        self.weights = {url: float(size or 0) if in_bytes else 1.0 for url, size in sizes.items()}
        #: The fixed total (the sum of the weights) and how much of it is done.
        self.total = sum(self.weights.values())
        self.done = 0.0
        options: dict[str, Any] = (
            {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if in_bytes else
            {"unit": "file", "bar_format": "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} files "
                                           "[{elapsed}<{remaining}{postfix}]"})
        self.bar = tqdm(total=self.total, disable=not progress, desc="processing", **options)

    def advance(self, file: str, share: float, *, events: int | None = None) -> None:
        """Count ``share`` (of 1) of ``file`` as done; show ``events`` processed so far."""
        step = self.weights.get(file, 0.0) * share
        self.done += step
        if events is not None:
            self.bar.set_postfix_str(f"{events:,} events", refresh=False)
        self.bar.update(step)

    def close(self) -> None:
        """Close the bar, drawn full when every file has been accounted for (the shares' rounding aside)."""
        if abs(self.done - self.total) <= 1e-9 * max(self.total, 1.0):
            self.bar.n = self.total
            self.bar.refresh()
        self.bar.close()


class Run:
    """One :func:`process_files` call: what it knows of the files, what is merged so far, what failed.

    Args:
        files: the input files (duplicates are processed as often as they appear).
        processor: the coffea processor (``columns``, ``config()``, ``empty_output()``, ``postprocess``).
        executor: where the tasks run.
        settings: the run's options.
        checkpointer: where finished chunks are kept (None: nowhere).
        progress: show the progress bar (:class:`ProgressBar`).
    """

    def __init__(self, files: list[str], processor: coffea_processor.ProcessorABC, executor: Executor,
                 settings: Settings, *, checkpointer: Checkpointer | None = None, progress: bool = False) -> None:
        self.files = files
        self.processor = processor
        self.executor = executor
        self.settings = settings
        self.checkpointer = checkpointer
        #: The merged output of every chunk taken so far.
        self.output: Any = processor.empty_output()
        self.failed: list[FailedChunk] = []
        #: Opened files, by path (their identity keys their checkpoints), and in the order they were opened.
        self.infos: dict[str, FileInfo] = {}
        self.opened: list[FileInfo] = []
        self.chunks = 0
        self.resumed = 0
        self.events_processed = 0
        self.split: dict[str, SplitFile] = {}
        #: Local files waiting to be packed, with their sizes; start tasks not yet answered, by file.
        self.held: list[tuple[str, int]] = []
        self.unopened = 0
        self.workers = 1
        self.bar = ProgressBar(files, progress=progress)
        #: Entries of each planned file's plan: a chunk moves the bar by its share of them.
        self.planned_entries: dict[str, int] = {}
        self.chunk_options: dict[str, Any] = dict(
            processor_type=type(processor), processor_config=processor.config(), dataset=settings.dataset,
            timeout=settings.timeout, max_retries=settings.retries, backoff=settings.backoff,
        )
        self.start_options: dict[str, Any] = dict(
            tree=settings.tree, columns=tuple(processor.columns), timeout=settings.timeout,
            max_retries=settings.retries, backoff=settings.backoff, chunksize=settings.chunksize,
            fraction=settings.fraction, task_entries=settings.task_entries,
            # On resume the first chunks may be checkpointed already: then every chunk waits for the plan.
            first_chunk=None if settings.resume else self.chunk_options,
        )

    # --- the run ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Start every file, then take each task's result as it finishes until none is left.

        Raises:
            CertificateError: an https server's certificate is not trusted.
            ProcessingError: with ``strict``, a file is missing, not ROOT, or lacks the tree or a branch.
        """
        try:
            with self.executor:
                self.start()
                for done in self.executor.as_completed():
                    if done.task.kind is TaskKind.START:
                        self.started(done)
                    else:
                        self.ran(done)
        finally:
            self.bar.close()

    def start(self) -> None:
        """Submit the first start tasks (:func:`~processors.planning.first_starts`); with fewer of them than
        workers (and not on resume, when there is nothing to run before the plan), a file in as many parts as it
        has room for."""
        sizes = [(url, _local_size(url)) for url in self.files]
        settings = self.settings
        self.workers = self.executor.workers()
        starting, self.held = first_starts(sizes, leading=2 * self.workers)
        starts = [(url, 0) for url in starting]
        if not settings.resume and len(set(self.files)) == len(self.files):
            most = {url: most_parts(size, chunksize=settings.chunksize, fraction=settings.fraction)
                    for url, size in sizes if size is not None}
            starts = spread_parts(starting, self.workers, most=most)
        parts = collections.Counter(url for url, _ in starts)
        self.split = {url: SplitFile(count) for url, count in parts.items() if count > 1}
        for url, part in starts:
            self.submit_start([url], part=part, parts=parts[url])

    def submit_start(self, files: list[str], *, part: int = 0, parts: int = 1) -> None:
        """One task that opens ``files`` and runs the first chunks of each (of part ``part`` of ``parts``)."""
        self.unopened += len(files)
        self.submit(Task(TaskKind.START, files=tuple(files), part=part), reading.start_files, files, part=part,
                    parts=parts, **self.start_options)

    def release_held(self, info: FileInfo | None) -> None:
        """Start the held files, packed by the bytes per entry of ``info``, a local file just opened (None: one
        task each, as no file could be opened to learn from)."""
        if not self.held:
            return
        if info is None:
            groups = [[url] for url, _ in self.held]
        else:
            size = _local_size(info.file)
            if not size or not info.num_entries:
                return
            groups = pack_files(self.held, bytes_per_entry=size / info.num_entries,
                                task_entries=self.settings.task_entries, fraction=self.settings.fraction)
        self.held = []
        for group in groups:
            self.submit_start(group)

    def submit(self, task: Task, function: Any, /, *args: Any, near: list[str] | None = None, **kwargs: Any) -> None:
        """Submit a task; tasks of further chunks run before files not yet started."""
        priority = 1 if task.kind is TaskKind.CHUNKS else 0
        self.executor.submit(task, function, *args, near=near, priority=priority, **kwargs)

    def submit_chunks(self, chunks: list[Chunk], *, near: list[str] | None = None) -> None:
        """One task of further chunks of a planned file."""
        self.submit(Task(TaskKind.CHUNKS, chunks=tuple(chunks)), reading.run_chunks, tuple(chunks), near=near,
                    **self.chunk_options)

    # --- results ----------------------------------------------------------------------------------------

    def ran(self, done: Done) -> None:
        """Take the outcomes of a task of further chunks (each chunk failed with the task if it failed)."""
        chunks = done.task.chunks
        outcomes = [done.value] * len(chunks) if done.failed else done.value
        for chunk, outcome in zip(chunks, outcomes):
            self.take(chunk, outcome)

    def started(self, done: Done) -> None:
        """Take a start task's answer: plan the file and submit its further chunks, or list it as failed."""
        task = done.task
        self.unopened -= len(task.files)
        if done.failed:  # the task itself failed (its worker died): every file of it, whole
            starts = [reading.FileStart(worker_failure(url, 0, None, done.value), (), task.part) for url in task.files]
        else:
            starts = done.value
        for start in starts:
            url = start.info.file
            split = self.split.get(url)
            if split is not None and split.dropped:
                continue  # listed as failed as a whole already
            if split is not None and split.planned:
                self.later_part(split, start, done)
            elif isinstance(start.info, FailedChunk):
                self.file_failed(start.info)
                if split is not None:
                    split.dropped = True
            else:
                self.planned(start.info, start, done, split)
        if self.unopened == 0:
            self.release_held(None)

    def planned(self, info: FileInfo, start: reading.FileStart, done: Done, split: SplitFile | None) -> None:
        """The first answer of a file that opened (``info``: its ``start.info``): plan it, take what the start task
        ran, submit the rest.

        The further tasks of the part that answered go to the worker that read it: all of them if the file is
        read in parts (each part's worker gets an equal share), else only the next one, and any later ones to
        whichever worker is free (which opens the file too, once).
        """
        settings = self.settings
        self.infos[info.file] = info
        self.opened.append(info)
        self.release_held(info)
        parts = split.parts if split is not None else 1
        plan = plan_chunks(info, tree=settings.tree, chunksize=settings.chunksize, fraction=settings.fraction,
                           multiple=parts)
        self.chunks += len(plan)
        self.planned_entries[info.file] = sum(chunk.entry_stop - chunk.entry_start for chunk in plan)
        if not plan:  # nothing to read in this file (no entries, or none in the fraction)
            self.bar.advance(info.file, 1.0)
        first = {part: [] if settings.resume else first_chunks(plan, part=part, parts=parts,
                                                               task_entries=settings.task_entries)
                 for part in range(parts)}
        self.take_all(first[start.part], start.done)
        lanes = {part: group_chunks(self.not_checkpointed(lane(plan, part=part, parts=parts)[len(first[part]):], info),
                                    settings.task_entries)
                 for part in range(parts)}
        if split is not None:
            split.planned, split.first = True, first
            split.lanes = {part: tasks for part, tasks in lanes.items() if part != start.part}
        near = self.near(start, done) if lanes[start.part] else None
        for number, chunks in enumerate(lanes[start.part]):
            self.submit_chunks(chunks, near=near if split is not None or number == 0 else None)

    def later_part(self, split: SplitFile, start: reading.FileStart, done: Done) -> None:
        """A further part of a file already planned: take what it ran (or run it again if it failed), then
        submit its lane's further tasks, to its worker if it answered."""
        ran = split.first[start.part]
        lane_tasks = split.lanes.pop(start.part, [])
        if isinstance(start.info, FailedChunk):
            if ran:
                self.submit_chunks(ran)
            near = None
        else:
            self.take_all(ran, start.done)
            near = self.near(start, done) if lane_tasks else None
        for chunks in lane_tasks:
            self.submit_chunks(chunks, near=near)

    def file_failed(self, failure: FailedChunk) -> None:
        """List a file that could not be opened, or raise if the run cannot go on without it."""
        if failure.kind == FailureKind.CERTIFICATE:  # every file of that server would fail the same way
            raise CertificateError(failure.error, failure.file)
        if self.settings.strict and failure.kind in (FailureKind.MISSING, FailureKind.CORRUPT, FailureKind.SCHEMA):
            raise ProcessingError(failure.error)
        self.failed.append(failure)
        self.bar.advance(failure.file, 1.0)

    def near(self, start: reading.FileStart, done: Done) -> list[str] | None:
        """The worker that ran ``start`` (it has the file open), else the holders of its result."""
        return [start.worker] if start.worker is not None else self.executor.holders(done)

    def not_checkpointed(self, chunks: list[Chunk], info: FileInfo) -> list[Chunk]:
        """``chunks`` less those resumed from the checkpoint (merged here)."""
        if self.checkpointer is None or not self.settings.resume:
            return chunks
        rest = []
        for chunk in chunks:
            saved = self.checkpointer.load(chunk, info)
            if saved is None:
                rest.append(chunk)
            else:
                self.merge(saved)
                self.resumed += 1
                self.chunk_done(chunk)
        return rest

    def take_all(self, chunks: list[Chunk], outcomes: Iterable[reading.ChunkOutcome]) -> None:
        for chunk, outcome in zip(chunks, outcomes):
            self.take(chunk, outcome)

    def take(self, chunk: Chunk, outcome: reading.ChunkOutcome | BaseException) -> None:
        """Count one chunk's outcome: checkpoint and merge its output, or list its failure."""
        if isinstance(outcome, BaseException):
            self.failed.append(worker_failure(chunk.file, chunk.entry_start, chunk.entry_stop, outcome))
        elif outcome.failure is not None:
            self.failed.append(outcome.failure)
        else:
            output = outcome.output
            assert output is not None, "a chunk's outcome has its output or its failure"
            if self.checkpointer is not None:
                self.checkpointer.save(output, chunk, self.infos[chunk.file])
            self.merge(output)
        self.chunk_done(chunk)

    def chunk_done(self, chunk: Chunk) -> None:
        """Move the bar by ``chunk``'s share of its file's planned entries (processed, failed or resumed alike)."""
        planned = self.planned_entries.get(chunk.file)
        if planned:
            self.bar.advance(chunk.file, (chunk.entry_stop - chunk.entry_start) / planned,
                             events=self.events_processed)

    def merge(self, output: dict[str, Any]) -> None:
        """Add a chunk's output to the merged output (in place; ``output`` itself is left as it is)."""
        self.output = coffea_processor.accumulate([output], self.output)
        self.events_processed += output["events"]

    # --- the result -------------------------------------------------------------------------------------

    def result(self, started: float) -> ProcessingResult:
        """The merged, postprocessed result of a finished run started at ``started`` (``time.perf_counter``)."""
        files, settings = self.files, self.settings
        histograms = self.processor.postprocess(self.output)
        failed = sorted(self.failed, key=lambda f: (files.index(f.file) if f.file in files else len(files), f.entry_start))
        config = {"type": type(self.processor).__qualname__, **self.processor.config(), "dataset": settings.dataset}
        identity = {
            "files": [
                {"file": url, "size": self.infos[url].size, "uuid": self.infos[url].uuid} if url in self.infos
                else {"file": url, "size": _local_size(url), "uuid": None}
                for url in files
            ],
            "config": {**config, "tree": settings.tree, "fraction": settings.fraction},
            "version": getattr(self.checkpointer, "version", None) or project_version(),
        }
        return ProcessingResult(
            histograms=histograms,
            events_in_files=sum(int(info.num_entries * settings.fraction) for info in self.opened),
            events_processed=int(self.events_processed),
            failed_chunks=failed,
            files=files,
            wall_time=time.perf_counter() - started,
            chunks=self.chunks,
            resumed_chunks=self.resumed,
            tasks=self.executor.submitted,
            fraction=settings.fraction,
            entries_total=sum(info.num_entries for info in self.opened),
            identity=json.loads(json.dumps(identity, default=str)),
            other_checkpoints=self.checkpointer.others(self.infos) if self.checkpointer is not None else OtherCheckpoints(),
        )


def _local_size(name: str) -> int | None:
    """Bytes of a local file; None for a URL or a file that cannot be seen (its task reports why)."""
    if is_remote(name):
        return None
    try:
        return os.path.getsize(name)
    except OSError:
        return None


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
    checkpointer: Checkpointer | None = None,
) -> ProcessingResult:
    """Run ``processor`` over ``files`` chunk by chunk and merge the outputs.

    Reads with :func:`processors.tuning.configure_uproot`'s settings (in this process for the run; on workers
    from their first task on).

    Args:
        files: ROOT files (local paths or root:// / https:// URLs).
        processor: a ProcessorABC with ``columns`` (branches to read), ``config()`` (plain keyword
            arguments that rebuild it on the workers) and ``empty_output()``.
        client: a ``distributed.Client``; None runs every task in this process.
        tree: name of the tree.
        chunksize: target entries per chunk (clusters are never split): what a worker holds in memory at once.
        task_entries: about how many entries per task, in consecutive chunks of a file (at least one); default
            :data:`~processors.planning.TASK_CHUNKS` chunk sizes. A task is the unit of scheduling and of
            retries; its chunks are checkpointed when it returns.
        fraction: share of each file to process, from its start (the tutorial's ``fraction``).
        retries: attempts after the first for transient (network) errors, with doubling back-off.
        backoff: seconds before the first retry (then 2x, 4x, ...): retries x back-off must outlast an outage.
        timeout: seconds for each remote read.
        checkpoint_dir: directory for one checkpoint file per finished chunk
            (:class:`~processors.checkpoint.DirectoryCheckpointer`); the checkpoints already there are never
            deleted or replaced, whatever they were computed from.
        resume: reuse the checkpoints of identical identity (same file path, size and UUID, entry range,
            processor configuration and project version) and process only the other chunks.
        progress: show a progress bar of the files' bytes (of the files, where one is remote), whose total is
            fixed before the first task runs.
        dataset: the name in ``events.metadata["dataset"]`` and on the histograms' dataset axis.
        strict: raise on a file that is missing, not ROOT, or lacks the tree or branches; if False,
            list it in ``failed_chunks`` and go on.
        checkpointer: another :class:`~processors.checkpoint.Checkpointer` instead of ``checkpoint_dir``'s.

    Returns:
        The merged histograms, event counts and failed chunks.

    Raises:
        ProcessingError: no files, a file listed twice, bad options, or (with ``strict``) a bad input file.
        CertificateError: an https server's certificate is not trusted (whatever ``strict``).
    """
    started = time.perf_counter()
    paths = [os.fspath(f) for f in files]
    if not paths:
        raise ProcessingError("no input files")
    listed: dict[str, str] = {}
    for path in paths:  # a file listed twice: its chunks would share checkpoint keys, and events go missing
        key = path if is_remote(path) else os.path.realpath(path)
        if key in listed:
            raise ProcessingError(f"{path} is listed twice (also as {listed[key]}): give each file once")
        listed[key] = path
    if not 0.0 < fraction <= 1.0:
        raise ProcessingError(f"fraction must be in (0, 1], got {fraction}")
    if chunksize < 1:
        raise ProcessingError(f"chunksize must be positive, got {chunksize}")
    task_entries = TASK_CHUNKS * chunksize if task_entries is None else task_entries
    if task_entries < 1:
        raise ProcessingError(f"task_entries must be positive, got {task_entries}")
    if retries < 0 or backoff < 0:
        raise ProcessingError(f"retries and backoff must not be negative, got {retries} and {backoff}")
    if checkpointer is None and checkpoint_dir is not None:
        config = {"type": type(processor).__qualname__, **processor.config(), "dataset": dataset}
        checkpointer = DirectoryCheckpointer(checkpoint_dir, config=config)
    if resume and checkpointer is None:
        raise ProcessingError("resume needs a checkpoint directory")
    settings = Settings(tree=tree, chunksize=chunksize, task_entries=task_entries, fraction=fraction, retries=retries,
                        backoff=backoff, timeout=timeout, resume=resume, strict=strict, dataset=dataset)
    run = Run(paths, processor, executor_for(client), settings, checkpointer=checkpointer, progress=progress)
    with configure_uproot():
        try:
            run.run()
        finally:
            if client is None:
                reading.trees.clear()  # leave no file open in the caller's process
    return run.result(started)
