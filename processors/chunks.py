"""Reading one chunk of one file and running a processor on it, as a plain picklable task.

Errors are classified here: a missing or corrupt file, a missing tree or branch and an untrusted server
certificate are permanent (no retry); network trouble is transient and retried with back-off, inside the task
so the engine sees one plain result per chunk.
"""

from __future__ import annotations

import contextlib
import functools
import math
import mmap
import os
import re
import ssl
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import awkward as ak
import uproot
from coffea.nanoevents.methods import base

from processors.errors import CertificateError, InputFileError, ProcessingError, SchemaError
from processors.schema import validate_tree

try:
    from isal import isal_zlib
except ImportError:  # optional at run time: uproot's zlib then inflates ZLIB baskets
    isal_zlib = None

#: Failure kinds: permanent ones are never retried.
MISSING, CORRUPT, SCHEMA, TRANSIENT, WORKER = "missing", "corrupt", "schema", "transient", "worker"
#: An https server whose certificate is not trusted: permanent, every read of it fails the same way.
CERTIFICATE = "certificate"
#: Kinds that a retry or a resumed run cannot mend: the file, or the reader's settings, must change.
PERMANENT = (MISSING, CORRUPT, SCHEMA, CERTIFICATE)

#: XRootD server answers that are final, not worth a retry (error codes of XProtocol.hh): not authorized, no such
#: file, not a file, a directory, authentication failed make the file missing; an invalid argument or a
#: file-system error, as for a read past the end of a truncated file ("illegal seek"), make it corrupt. Other
#: answers (overloaded, timed out, no server, ...) and lost connections stay transient.
XROOTD_MISSING, XROOTD_CORRUPT = {"3010", "3011", "3015", "3016", "3030"}, {"3000", "3005"}

#: XRootD client settings, read once when its library loads (so set here, before any root:// read of this
#: process; Dask workers import this module first), unless the user set them: time-outs checked every second,
#: not every 15 s; a refused connection failing at once, not retried for 2 minutes; a failed server tried again
#: after 1 s, not after 30 minutes. Without them the retries below cannot bridge a server restart.
XROOTD_CLIENT_ENV = {
    "XRD_TIMEOUTRESOLUTION": "1", "XRD_CONNECTIONWINDOW": "10", "XRD_CONNECTIONRETRY": "1", "XRD_STREAMERRORWINDOW": "1"
}
for _name, _value in XROOTD_CLIENT_ENV.items():
    os.environ.setdefault(_name, _value)


def inflate_with_isal() -> str:
    """Have uproot inflate ZLIB baskets with isal (Intel ISA-L) when it is installed; return the library in use.

    ZLIB is ROOT's default basket compression, and inflating it is most of a bare read of such files;
    isal's inflate gives the same bytes faster: the processor ran 1.1-1.4x faster on ZLIB files (more on large
    files; BENCHMARKS.md, Processing).
    uproot offers it as ``uproot.ZLIB.library = "isal"``, but 5.7.7 reads baskets through a private
    instance that never looks at that setting, so the instance itself is switched. Writing is left alone
    (``uproot.ZLIB.library``), and so is a library the user chose.
    """
    decompressor = getattr(uproot.compression, "_decompress_ZLIB", None)
    if decompressor is None:
        return "zlib"
    if decompressor.library == "zlib" and isal_zlib is not None:
        decompressor.library = "isal"
    return decompressor.library


#: Set on import, like the XRootD settings: Dask workers import this module before their first read.
ZLIB_LIBRARY = inflate_with_isal()
#: What inflating a damaged ZLIB basket raises (isal's error is not a ``zlib.error``).
INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error,) if isal_zlib is None else (zlib.error, isal_zlib.error)


def memoize_classnames() -> bool:
    """Have uproot normalize each C++ class name once per process instead of once per object read; True if done.

    Opening a tree deserializes its ~80 branch descriptions, and every object and base class of them passes its
    class name through ``uproot.model.classname_regularize`` (two regular expressions). The function is pure (a
    string or None in, a string or None out), so caching it reads the same objects: 13-22 % less CPU per file
    opened (16 files of benchmarks/bench_scaling.py's 4x set opened in turns with and without the cache, in a
    process with the workers' garbage-collector settings: median 39 -> 34, 45 -> 38 and 47 -> 37 ms per file).
    Done once, here, like :func:`inflate_with_isal`, by replacing uproot's module attribute, where its callers
    look the function up; a function that is cached already is left alone.
    """
    model = uproot.model
    regularize = getattr(model, "classname_regularize", None)
    if regularize is None:
        return False
    if not hasattr(regularize, "cache_info"):
        model.classname_regularize = functools.lru_cache(maxsize=4096)(regularize)
    return True


#: Set on import, like the inflater.
CLASSNAMES_MEMOIZED = memoize_classnames()


class Chunk(NamedTuple):
    """An entry range of one tree in one file."""

    file: str
    tree: str
    entry_start: int
    entry_stop: int


class FailedChunk(NamedTuple):
    """A chunk that could not be processed; ``entry_stop`` is None when the file could not be opened."""

    file: str
    entry_start: int
    entry_stop: int | None
    error: str
    kind: str


class ChunkOutcome(NamedTuple):
    """What a chunk task returns: the processor's output, or the failure."""

    chunk: Chunk
    output: dict[str, Any] | None
    failure: FailedChunk | None
    attempts: int


def is_remote(url: str) -> bool:
    """True for URLs read over the network (root://, https://, ...)."""
    return "://" in url and not url.startswith("file://")


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


def classify(error: BaseException, url: str) -> tuple[str, ProcessingError | BaseException]:
    """Return the failure kind of an exception raised while reading ``url`` and a one-line error.

    Args:
        error: the exception.
        url: the file being read.

    Returns:
        (kind, error) with kind one of "missing", "corrupt", "schema", "certificate", "transient".
    """
    untrusted = _certificate_failure(error)
    if untrusted is not None:
        return CERTIFICATE, CertificateError(_untrusted_message(url, untrusted), url)
    if isinstance(error, SchemaError):
        return SCHEMA, error
    if isinstance(error, InputFileError):
        return CORRUPT, error
    if isinstance(error, uproot.KeyInFileError):
        key = error.key if isinstance(error.key, str) else str(error.key)
        return SCHEMA, SchemaError(f"{url}: {key!r} not found")
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)) and not is_remote(url):
        # uproot's memory-mapped source raises FileNotFoundError with a multi-line hint and no strerror.
        reason = error.strerror or ("No such file or directory" if isinstance(error, FileNotFoundError) else one_line(error))
        return MISSING, InputFileError(f"{url}: {reason}")
    if isinstance(error, OSError) and is_remote(url):
        code = re.search(r"Server responded with an error: \[(\d+)\]", str(error))
        reason = " ".join(str(error).split())[:200]
        if code is not None and code[1] in XROOTD_MISSING:
            return MISSING, InputFileError(f"{url}: {reason}")
        if (code is not None and code[1] in XROOTD_CORRUPT) or str(error).startswith("expected Chunk of length"):
            return CORRUPT, InputFileError(f"{url}: not a readable ROOT file ({reason})")
    if isinstance(error, (TimeoutError, ConnectionError)) or (isinstance(error, OSError) and is_remote(url)):
        return TRANSIENT, error
    if isinstance(error, ValueError) and is_remote(url) and "closed file" in str(error):
        return TRANSIENT, error  # a handle closed by a lost connection ("I/O operation on closed file")
    if isinstance(error, TypeError) and is_remote(url) and _raised_in(error, "uproot/source/coalesce.py"):
        # uproot's coalesced reads slice what a failed range returned, so a lost https connection surfaces
        # as "TypeError: 'ClientConnectorError' object is not subscriptable".
        return TRANSIENT, error
    if isinstance(error, (OSError, ValueError, *INFLATE_ERRORS, uproot.deserialization.DeserializationError)):
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        return CORRUPT, InputFileError(f"{url}: not a readable ROOT file ({reason})")
    raise error


def _certificate_failure(error: BaseException) -> str | None:
    """The verifier's reason if ``error`` (or one it was raised from) is a refused server certificate, else None.

    aiohttp's ``ClientConnectorCertificateError`` is an ``ssl.SSLCertVerificationError``; uproot's coalesced
    reads can turn it into a ``TypeError`` that only names it.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, CertificateError):
            return None
        if isinstance(error, ssl.SSLCertVerificationError):
            original = getattr(error, "certificate_error", error)  # aiohttp's wraps the ssl module's
            return getattr(original, "verify_message", None) or "certificate verify failed"
        if isinstance(error, TypeError) and "CertificateError" in str(error):
            return "certificate verify failed"
        error = error.__cause__ or error.__context__
    return None


def _untrusted_message(url: str, reason: str) -> str:
    cafile = os.environ.get("SSL_CERT_FILE")
    trusted = f"SSL_CERT_FILE={cafile} does not sign it" if cafile else "SSL_CERT_FILE is not set"
    return (f"{url}: the server's certificate is not trusted ({reason}; {trusted}); "
            "set SSL_CERT_FILE to the certificate, or CA bundle, that signs it")


def _raised_in(error: BaseException, path: str) -> bool:
    """True if the innermost frame of ``error``'s traceback is in a file ending with ``path``."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and traceback.tb_frame.f_code.co_filename.replace("\\", "/").endswith(path)


def one_line(error: BaseException) -> str:
    """The first line of an error message, prefixed with the type for errors outside the project's."""
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, ProcessingError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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


def open_tree(url: str, tree: str, columns: tuple[str, ...], *, timeout: float) -> uproot.TTree:
    """Open ``tree`` in ``url`` and check that it has ``columns``; the caller closes ``tree.file``.

    Raises:
        SchemaError: the tree or a branch is missing, or a branch has the wrong type.
    """
    # The XRootD bindings take whole seconds and raise TypeError on a float (the CLI's --timeout is one).
    # No array cache: every entry range is read once, and the open trees are kept (TreeCache), so uproot's
    # default 100 MB cache per file would keep up to that much per cached file for nothing (memory grows
    # with the data size: 360 MiB more per worker on a 4.7 M-event set, benchmarks/bench_scaling.py).
    # Local files are memory-mapped: uproot's default fsspec source costs a third more CPU per file (its
    # event-loop thread and copies), a fifth of the processor's whole budget (benchmarks/bench_processing.py).
    options = {} if is_remote(url) else {"handler": uproot.source.file.MemmapSource}
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

    Deserializing the TTree's ~80 branch descriptions costs about as much as reading 100k events of the
    six photon branches, so reopening per chunk would cost a large share of the throughput. Local
    files are keyed with their size and modification time: a file replaced on disk is opened afresh.

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
                kind, reported = "error", error
            if kind == TRANSIENT and attempt <= max_retries:
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            failure = FailedChunk(chunk.file, chunk.entry_start, chunk.entry_stop, one_line(reported), kind)
            return ChunkOutcome(chunk, None, failure, attempt)


def run_chunks(chunks: Sequence[Chunk], **options: Any) -> list[ChunkOutcome]:
    """:func:`run_chunk` for each of ``chunks`` in turn (``options`` as for it), in one task: one chunk in
    memory at a time, one outcome each."""
    return [run_chunk(chunk, **options) for chunk in chunks]
