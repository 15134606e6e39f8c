"""Reading one chunk of one file and running a processor on it, as a plain picklable task.

Errors are classified here: a missing or corrupt file and a missing tree or branch are permanent (no
retry); network trouble is transient and retried with back-off, inside the task so the engine sees
one plain result per chunk.
"""

from __future__ import annotations

import math
import time
import zlib
from typing import Any, NamedTuple

import awkward as ak
import uproot
from coffea.nanoevents.methods import base

from processors.errors import InputFileError, ProcessingError, SchemaError
from processors.schema import validate_tree

#: Failure kinds: permanent ones are never retried.
MISSING, CORRUPT, SCHEMA, TRANSIENT, WORKER = "missing", "corrupt", "schema", "transient", "worker"


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


def classify(error: BaseException, url: str) -> tuple[str, ProcessingError | BaseException]:
    """Return the failure kind of an exception raised while reading ``url`` and a one-line error.

    Args:
        error: the exception.
        url: the file being read.

    Returns:
        (kind, error) with kind one of "missing", "corrupt", "schema", "transient".
    """
    if isinstance(error, SchemaError):
        return SCHEMA, error
    if isinstance(error, InputFileError):
        return CORRUPT, error
    if isinstance(error, uproot.KeyInFileError):
        key = error.key if isinstance(error.key, str) else str(error.key)
        return SCHEMA, SchemaError(f"{url}: {key!r} not found")
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)) and not is_remote(url):
        return MISSING, InputFileError(f"{url}: {error.strerror or error}")
    if isinstance(error, (TimeoutError, ConnectionError)) or (isinstance(error, OSError) and is_remote(url)):
        return TRANSIENT, error
    if isinstance(error, (OSError, ValueError, zlib.error, uproot.deserialization.DeserializationError)):
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        return CORRUPT, InputFileError(f"{url}: not a readable ROOT file ({reason})")
    raise error


def one_line(error: BaseException) -> str:
    """The first line of an error message, prefixed with the type for errors outside the project's."""
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, ProcessingError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def open_tree(url: str, tree: str, columns: tuple[str, ...], *, timeout: float) -> uproot.TTree:
    """Open ``tree`` in ``url`` and check that it has ``columns``.

    Raises:
        SchemaError: the tree or a branch is missing, or a branch has the wrong type.
    """
    # The XRootD bindings take whole seconds and raise TypeError on a float (the CLI's --timeout is one).
    file = uproot.open(url, timeout=max(1, math.ceil(timeout)) if url.startswith("root://") else timeout)
    try:
        ttree = file[tree]
    except uproot.KeyInFileError:
        file.close()
        raise SchemaError(f"{url}: no tree {tree!r}") from None
    if not isinstance(ttree, uproot.behaviors.TTree.TTree):
        file.close()
        raise SchemaError(f"{url}: {tree!r} is not a TTree")
    try:
        validate_tree(ttree, branches=columns, source=url)
    except SchemaError:
        file.close()
        raise
    return ttree


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
            ttree = open_tree(chunk.file, chunk.tree, columns, timeout=timeout)
            with ttree.file:
                arrays = ttree.arrays(
                    columns, entry_start=chunk.entry_start, entry_stop=chunk.entry_stop, how=dict
                )
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
            try:
                kind, reported = classify(error, chunk.file)
            except Exception:  # an unexpected error (a bug, a bad processor): list it, never lose it
                kind, reported = "error", error
            if kind == TRANSIENT and attempt <= max_retries:
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            failure = FailedChunk(chunk.file, chunk.entry_start, chunk.entry_stop, one_line(reported), kind)
            return ChunkOutcome(chunk, None, failure, attempt)
