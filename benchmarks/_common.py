"""Helpers shared by the benchmarks: machine description, worker memory sampling, a processor reading every branch.

Kept importable on Dask workers (classes here are pickled by reference, and the workers are spawned with the
client's ``sys.path``), so nothing in it may depend on ``__main__``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import uproot

from processors.processor import DiphotonProcessor
from processors.schema import BRANCHES, TREE_NAME
from processors.tuning import configure_uproot

#: Every process that imports the benchmarks reads as the engine does (isal for ZLIB baskets, class names
#: normalized once); :func:`plain_uproot` turns that off within a block.
configure_uproot()

#: Every branch of the schema (what "read all branches" means in the benchmarks).
ALL_BRANCHES = tuple(branch.name for branch in BRANCHES)


class AllBranchesProcessor(DiphotonProcessor):
    """The diphoton processor, but the engine loads every branch of the tree (the cost of not selecting columns)."""

    columns = ALL_BRANCHES


@contextlib.contextmanager
def uproot_settings(*, inflater: str | None = None, memoized_classnames: bool = True) -> Iterator[None]:
    """Within the block: ZLIB baskets inflated by ``inflater`` (None: as set, isal since this module was imported)
    and, unless ``memoized_classnames``, class names normalized per object read, as uproot does without
    ``processors.tuning.configure_uproot``; both put back afterwards."""
    decompressor = uproot.compression._decompress_ZLIB
    model = uproot.model
    library, regularize = decompressor.library, model.classname_regularize
    decompressor.library = inflater or library
    if not memoized_classnames:
        model.classname_regularize = getattr(regularize, "__wrapped__", regularize)
    try:
        yield
    finally:
        decompressor.library, model.classname_regularize = library, regularize


def plain_uproot() -> contextlib.AbstractContextManager[None]:
    """uproot as installed, within the block: Python's zlib and no cached class names (the engine's reading
    settings, which importing the project switches on in every process, off)."""
    return uproot_settings(inflater="zlib", memoized_classnames=False)


def machine() -> str:
    """One line naming the machine: cores, memory, CPU model, load average now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), {memory:.1f} GiB memory, load average {load}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def max_rss_bytes() -> int:
    """Peak resident memory of the calling process (the kernel's high-water mark), bytes.

    ``VmHWM`` of /proc/self/status where there is one: unlike ``ru_maxrss``, it does not carry over the peak of
    the parent a spawned process was forked from.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def warm_worker() -> int:
    """Import what a chunk task needs (so the first timed chunk pays no imports); return the worker's pid."""
    import coffea.processor  # noqa: F401
    import hist  # noqa: F401

    import processors.chunks  # noqa: F401
    import processors.processor  # noqa: F401

    return os.getpid()


def anon_rss_bytes(pid: int) -> int:
    """Anonymous resident memory of ``pid`` (``RssAnon``: heap and arrays, not mapped file pages), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Sample the resident memory of some processes in a background thread; keep each one's peak.

    Args:
        pids: processes to watch.
        interval: seconds between samples.
    """

    def __init__(self, pids: Iterable[int], *, interval: float = 0.05) -> None:
        self._processes = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: 0 for pid in self._processes}
        #: Peak anonymous resident memory (RssAnon): RSS less the pages of memory-mapped files.
        self.peak_anon = {pid: 0 for pid in self._processes}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, process in self._processes.items():
                try:
                    self.peak[pid] = max(self.peak[pid], process.memory_info().rss)
                    self.peak_anon[pid] = max(self.peak_anon[pid], anon_rss_bytes(pid))
                except (psutil.Error, OSError):
                    pass
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def branch_bytes(files: Iterable[str | os.PathLike[str]], branches: Iterable[str], *, tree: str = TREE_NAME) -> tuple[int, int]:
    """Compressed and uncompressed bytes of ``branches`` over ``files`` (what reading them whole costs)."""
    compressed = uncompressed = 0
    branches = list(branches)
    for path in files:
        with uproot.open(path) as file:
            ttree = file[tree]
            for name in branches:
                compressed += ttree[name].compressed_bytes
                uncompressed += ttree[name].uncompressed_bytes
    return compressed, uncompressed


#: Seconds this process's garbage collections took since :func:`record_gc` (or the last :func:`gc_seconds`).
_GC_SECONDS = [0.0]
_GC_STARTED = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _GC_STARTED[0] = time.perf_counter()
    else:
        _GC_SECONDS[0] += time.perf_counter() - _GC_STARTED[0]


def record_gc() -> None:
    """Start timing this process's garbage collections (once per process; ``client.run(record_gc)`` on workers)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    _GC_SECONDS[0] = 0.0


def gc_seconds() -> float:
    """Seconds spent collecting since the last call (or :func:`record_gc`), and start counting again."""
    seconds, _GC_SECONDS[0] = _GC_SECONDS[0], 0.0
    return seconds


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def replace_section(section: str, lines: list[str], path: Path = Path(__file__).resolve().parents[1] / "BENCHMARKS.md") -> None:
    """Replace the body of the ``section`` heading (e.g. "## Processing") of BENCHMARKS.md, adding it if missing."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n"
    head, rest = text.split(section, 1)
    tail = rest[rest.find("\n## "):] if "\n## " in rest else "\n"
    path.write_text(head + section + "\n\n" + "\n".join(lines) + "\n" + tail)
