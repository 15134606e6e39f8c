"""Checkpoints: finished chunks' outputs kept on disk, so that an interrupted run resumes with the missing ones.

The interface is coffea's checkpointer (``coffea.processor.CheckpointerABC``): ``load`` returns a chunk's saved
output or None, ``save`` keeps one. Here a chunk is named by its :class:`~processors.planning.Chunk` and its
file's :class:`~processors.planning.FileInfo`, whose size and ROOT UUID tell a replaced file from the original.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib.metadata
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from processors.planning import Chunk, FileInfo


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


class Checkpointer(abc.ABC):
    """Where a run keeps its finished chunks' outputs (coffea's ``CheckpointerABC``, keyed by chunk and file).

    The engine calls :meth:`load` for each chunk before running it (on resume only) and :meth:`save` for each
    chunk that succeeded, in the client process, as outputs arrive.
    """

    @abc.abstractmethod
    def load(self, chunk: Chunk, info: FileInfo) -> dict[str, Any] | None:
        """The saved output of ``chunk`` of the file ``info``, or None if there is none to reuse."""

    @abc.abstractmethod
    def save(self, output: dict[str, Any], chunk: Chunk, info: FileInfo) -> None:
        """Keep ``output``, the processor's output of ``chunk`` of the file ``info``."""

    def others(self, infos: dict[str, FileInfo]) -> OtherCheckpoints:
        """Checkpoints kept that are not of this run's chunks (``infos``: this run's opened files by path)."""
        return OtherCheckpoints()


class DirectoryCheckpointer(Checkpointer):
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

    def __init__(self, directory: str | os.PathLike[str], *, config: dict[str, Any], version: str | None = None) -> None:
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

    def save(self, output: dict[str, Any], chunk: Chunk, info: FileInfo) -> None:
        """Save ``output`` atomically, unless a readable checkpoint of the same identity exists."""
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
        """The checkpoints in the directory that are not of this run's chunks, and what differs in them."""
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
