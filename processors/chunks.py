"""Reading chunks of a file's tree and running a processor on them, as plain picklable tasks.

A task opens a file once (:data:`trees` keeps it open for the process's next chunks), reads only the
processor's branches, and returns one plain :class:`ChunkOutcome` per chunk: the processor's output, or the
failure with its kind (:mod:`processors.failures`). Transient errors are retried with back-off inside the task.
Each task makes sure its process reads as :func:`processors.tuning.configure_uproot` sets (a Dask worker
without the project's worker plugin included).
"""

from __future__ import annotations

import contextlib
import functools
import math
import mmap
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import awkward as ak
import uproot
from coffea.nanoevents.methods import base

from processors.errors import SchemaError
from processors.datasets import is_remote
from processors.failures import PERMANENT, FailedChunk, FailureKind, classify
from processors.planning import Chunk, FileInfo, first_chunks, plan_chunks
from processors.schema import validate_tree
from processors.tuning import configure_uproot

#: For callers that test a failure's kind against these names (deploy.cli_processing).
CERTIFICATE = FailureKind.CERTIFICATE
__all__ = ["CERTIFICATE", "PERMANENT", "Chunk", "ChunkOutcome", "FailedChunk", "FileStart", "TreeCache", "clear_trees",
           "https_options", "inspect_file", "open_tree", "run_chunk", "run_chunks", "start_files", "trees"]


class ChunkOutcome(NamedTuple):
    """What a chunk task returns: the processor's output, or the failure."""

    chunk: Chunk
    output: dict[str, Any] | None
    failure: FailedChunk | None
    attempts: int


def forget_handles(url: str) -> None:
    """Drop the XRootD file handle that fsspec-xrootd keeps open for ``url``.

    After a connection error the cached handle stays closed ("I/O operation on closed file") or bound to the
    old connection, so every retry would fail until it expires; the next open makes a fresh one.
    """
    if not url.startswith("root://"):
        return
    try:
        from fsspec_xrootd import XRootDFileSystem
    except ImportError:
        return
    for filesystem in list(XRootDFileSystem._cache.values()):
        with contextlib.suppress(Exception):  # closing a handle of a dead server may fail; it is dropped anyway
            filesystem.invalidate_cache(filesystem._strip_protocol(url))


@functools.lru_cache(maxsize=8)
def _trusting(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def https_options(url: str) -> dict[str, Any]:
    """uproot options that make an https read trust the CA bundle ``SSL_CERT_FILE`` names now.

    aiohttp builds its default TLS context once, when it is imported; a ``SSL_CERT_FILE`` set later (a
    self-signed facility or test server, ``opendata-stats serve``) would otherwise be ignored. One context
    per bundle, so fsspec keeps reusing its cached filesystem and connections.
    """
    cafile = os.environ.get("SSL_CERT_FILE")
    if not url.startswith("https://") or not cafile:
        return {}
    return {"ssl": _trusting(cafile)}


#: Bytes of a root:// file that its first read fetches (uproot's ``begin_chunk_size``, 403 by default): the header and,
#: where a file keeps them right after it (as the generator writes them), the keys, streamers and TTree metadata: one
#: round trip where there were three, which counts over a slow link. A smaller file is read whole (XRootD returns
#: what there is). Not over https: XrdHttp answers a range past the end of a smaller file with no data.
ROOT_BEGIN_CHUNK = 1 << 16


def open_tree(url: str, tree: str, columns: tuple[str, ...], *, timeout: float) -> uproot.TTree:
    """Open ``tree`` in ``url`` and check that it has ``columns``; the caller closes ``tree.file``.

    Raises:
        SchemaError: the tree or a branch is missing, or a branch has the wrong type.
    """
    # The XRootD bindings take whole seconds and raise TypeError on a float (the CLI's --timeout is one).
    # No array cache: every entry range is read once and the trees are kept open (TreeCache), so uproot's
    # default cache per file would hold memory that grows with the data size for nothing. Local files are
    # memory-mapped: uproot's default fsspec source spends more CPU per file (an event-loop thread, copies).
    options: dict[str, Any] = {} if is_remote(url) else {"handler": uproot.source.file.MemmapSource}
    if url.startswith("root://"):
        options["begin_chunk_size"] = ROOT_BEGIN_CHUNK
    options.update(https_options(url))
    file = uproot.open(
        url, timeout=max(1, math.ceil(timeout)) if url.startswith("root://") else timeout, array_cache=None, **options
    )
    try:
        ttree = file[tree]
        if not isinstance(ttree, uproot.behaviors.TTree.TTree):
            raise SchemaError(f"{url}: {tree!r} is not a TTree")
        validate_tree(ttree, branches=columns, source=url)
    except uproot.KeyInFileError:
        file.close()
        raise SchemaError(f"{url}: no tree {tree!r}") from None
    except BaseException:
        file.close()
        raise
    return ttree


class TreeCache:
    """The last few opened trees of this process, so that a file is opened once, not once per chunk.

    Opening deserializes the TTree's ~80 branch descriptions, as costly as reading and selecting a large share
    of a chunk (BENCHMARKS.md, Processing). Local files are keyed with their size, modification time and inode:
    a file replaced on disk is opened afresh.

    Args:
        size: number of trees kept open.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._trees: OrderedDict[tuple, uproot.TTree] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(url: str, tree: str, columns: tuple[str, ...]) -> tuple:
        try:
            stat = os.stat(url) if not is_remote(url) else None
        except OSError:
            stat = None
        signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino) if stat is not None else None
        return (url, tree, columns, signature)

    def get(self, url: str, tree: str, columns: tuple[str, ...], *, timeout: float) -> uproot.TTree:
        """The open tree, opening and validating it if it is not cached."""
        key = self._key(url, tree, columns)
        with self._lock:
            if key in self._trees:
                self._trees.move_to_end(key)
                return self._trees[key]
        ttree = open_tree(url, tree, columns, timeout=timeout)
        with self._lock:
            self._trees[key] = ttree
            while len(self._trees) > self.size:
                _, evicted = self._trees.popitem(last=False)
                evicted.file.close()
        return ttree

    def clear(self) -> None:
        """Close and forget every tree."""
        with self._lock:
            while self._trees:
                self._trees.popitem()[1].file.close()

    def discard(self, url: str) -> None:
        """Close and forget every tree of ``url`` (after an error: the handle may be broken)."""
        with self._lock:
            for key in [k for k in self._trees if k[0] == url]:
                self._trees.pop(key).file.close()
        forget_handles(url)


#: This process's cache, shared by the chunk tasks that run in it (one per Dask worker process).
trees = TreeCache()


def clear_trees() -> None:
    """Close the trees this process keeps open (``client.run(clear_trees)`` does it on every worker)."""
    trees.clear()


def events_array(columns: dict[str, ak.Array], metadata: dict[str, Any]) -> ak.Array:
    """Zip columns of equal length into a light NanoEvents record carrying ``metadata`` like coffea does."""
    names = list(columns)
    layouts = [ak.to_layout(columns[name]) for name in names]
    record = ak.contents.RecordArray(
        layouts,
        names,
        length=len(layouts[0]) if layouts else 0,
        parameters={"__record__": "NanoEvents", "metadata": metadata},
    )
    return ak.Array(record, behavior=base.behavior)


def release_mapped_pages(ttree: uproot.TTree) -> None:
    """Unmap the pages of a memory-mapped local file from this process; they stay in the page cache.

    A kept-open file (:data:`trees`) would otherwise keep every page read so far resident, counted in the
    worker's memory (and by Dask's memory limit), growing with the file size instead of the chunk size.
    The mapping is shared and read-only, so arrays that still view it stay valid: an access faults the page
    back in from the page cache.
    """
    source = getattr(ttree.file, "source", None)
    mapped = getattr(getattr(source, "_file", None), "_mmap", None) if isinstance(source, uproot.source.file.MemmapSource) else None
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapped.madvise(mmap.MADV_DONTNEED)


def run_chunk(
    chunk: Chunk,
    *,
    processor_type: type,
    processor_config: dict[str, Any],
    dataset: str,
    timeout: float,
    max_retries: int,
    backoff: float = 0.5,
) -> ChunkOutcome:
    """Read ``chunk``, run a fresh processor on it, and return a plain outcome (a Dask task).

    Args:
        chunk: file, tree and entry range.
        processor_type: a ProcessorABC class with a ``columns`` attribute.
        processor_config: keyword arguments of ``processor_type``.
        dataset: name put into ``events.metadata["dataset"]``.
        timeout: seconds for each remote read.
        max_retries: attempts after the first for transient errors (not ``retries``, which
            ``client.submit`` takes for itself).
        backoff: seconds before the first retry, doubled each time.

    Returns:
        The processor's output, or the failure with its kind.
    """
    processor = processor_type(**processor_config)
    columns = tuple(processor.columns)
    attempt = 0
    while True:
        attempt += 1
        try:
            ttree = trees.get(chunk.file, chunk.tree, columns, timeout=timeout)
            arrays = ttree.arrays(columns, entry_start=chunk.entry_start, entry_stop=chunk.entry_stop, how=dict)
            release_mapped_pages(ttree)
            metadata = {
                "dataset": dataset,
                "filename": chunk.file,
                "treename": chunk.tree,
                "entrystart": chunk.entry_start,
                "entrystop": chunk.entry_stop,
            }
            output = processor.process(events_array(arrays, metadata))
            return ChunkOutcome(chunk, output, None, attempt)
        except Exception as error:  # noqa: BLE001 - every failure becomes a listed failed chunk
            trees.discard(chunk.file)
            try:
                kind, reported = classify(error, chunk.file)
            except Exception:  # an unexpected error (a bug, a bad processor): list it, never lose it
                kind, reported = FailureKind.ERROR, error
            if kind == FailureKind.TRANSIENT and attempt <= max_retries:
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            failure = FailedChunk.of(chunk.file, chunk.entry_start, chunk.entry_stop, reported, kind)
            return ChunkOutcome(chunk, None, failure, attempt)


def run_chunks(chunks: Sequence[Chunk], **options: Any) -> list[ChunkOutcome]:
    """:func:`run_chunk` for each of ``chunks`` in turn (``options`` as for it), in one task: one chunk in
    memory at a time, one outcome each. The engine's task for the further chunks of a planned file."""
    configure_uproot()
    return [run_chunk(chunk, **options) for chunk in chunks]


def _file_size(url: str, file: Any) -> int | None:
    """Bytes of an open file: from the file system for a local one, else what its source knows."""
    try:
        return os.path.getsize(url) if not is_remote(url) else int(file.source.num_bytes)
    except Exception:  # noqa: BLE001 - a size the source cannot tell is unknown, not an error
        return None


def inspect_file(
    url: str, *, tree: str, columns: tuple[str, ...], timeout: float, max_retries: int, backoff: float = 0.5
) -> FileInfo | FailedChunk:
    """Open ``url`` and return its entries, clusters, size and UUID, or the failure (whole file, ``entry_stop``
    None). Transient errors are retried ``max_retries`` times, ``backoff`` seconds after the first, doubling."""
    attempt = 0
    while True:
        attempt += 1
        try:
            ttree = trees.get(url, tree, columns, timeout=timeout)
            offsets = tuple(int(x) for x in ttree.common_entry_offsets())
            return FileInfo(url, int(ttree.num_entries), offsets, _file_size(url, ttree.file), str(ttree.file.uuid))
        except Exception as error:  # noqa: BLE001 - classified below, unexpected ones re-raised
            trees.discard(url)
            kind, reported = classify(error, url)
            if kind == FailureKind.TRANSIENT and attempt <= max_retries:
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            return FailedChunk.of(url, 0, None, reported, kind)


class FileStart(NamedTuple):
    """What :func:`start_file` returns: the file's entries (or failure) and the outcomes of the chunks of part
    ``part`` that it ran (:func:`~processors.planning.first_chunks`); ``worker``: the Dask worker that ran it
    (None in this process), which has the file open."""

    info: FileInfo | FailedChunk
    done: tuple[ChunkOutcome, ...] = ()
    part: int = 0
    worker: str | None = None


def start_file(
    url: str, *, tree: str, columns: tuple[str, ...], timeout: float, max_retries: int, chunksize: int,
    fraction: float, first_chunk: dict[str, Any] | None, backoff: float = 0.5, part: int = 0, parts: int = 1,
    task_entries: int | None = None,
) -> FileStart:
    """Inspect ``url`` and, unless ``first_chunk`` is None, run the first task of part ``part``'s lane.

    Running them in the task that opens the file saves a task and a round trip per file, which matters when
    files hold one or a few chunks. The chunks are planned as the engine plans them from the returned info, so
    both agree on what this task ran.

    Args:
        url: the file.
        tree, columns, timeout, max_retries, backoff: as for :func:`inspect_file`.
        chunksize, fraction: as for :func:`~processors.planning.plan_chunks`.
        first_chunk: keyword arguments of :func:`run_chunk` other than the chunk.
        part: whose chunks to run (none if the file has fewer chunks than parts).
        parts: start tasks of this file (``multiple`` of :func:`~processors.planning.plan_chunks`).
        task_entries: about how many entries to run, as for :func:`~processors.planning.group_chunks`.
    """
    info = inspect_file(url, tree=tree, columns=columns, timeout=timeout, max_retries=max_retries, backoff=backoff)
    if first_chunk is None or not isinstance(info, FileInfo):
        return FileStart(info, (), part)
    planned = plan_chunks(info, tree=tree, chunksize=chunksize, fraction=fraction, multiple=parts)
    chunks = first_chunks(planned, part=part, parts=parts, task_entries=task_entries)
    return FileStart(info, tuple(run_chunks(chunks, **first_chunk)), part)


def start_files(urls: list[str], **options: Any) -> list[FileStart]:
    """:func:`start_file` for each of ``urls`` in turn (``options`` as for it), each naming the worker that ran
    it: where the file's next chunks go, without asking the scheduler. The engine's task that opens files."""
    configure_uproot()
    worker = _worker_address()
    return [start_file(url, **options)._replace(worker=worker) for url in urls]


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # not in a Dask worker
        return None
