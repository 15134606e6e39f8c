"""Clocks and meters: wall time of a call, CPU seconds of a cluster or of a process tree, resident memory
(sampled, and the kernel's high-water mark), time spent collecting garbage."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def cluster_cpu(client: Any) -> Callable[[], float]:
    """A clock: CPU seconds so far of the client process and every worker of ``client``."""
    return lambda: time.process_time() + sum(client.run(time.process_time).values())


def tree_cpu() -> float:
    """CPU seconds so far of this process and all its descendants: those alive now (Dask's nanny and worker
    processes, a kept process pool) and those that ended and were waited for."""
    own, ended = time.process_time(), os.times()
    alive = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            alive += times.user + times.system
    return own + ended.children_user + ended.children_system + alive


# --- memory --------------------------------------------------------------------------------------------


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


def anon_rss_bytes(pid: int) -> int:
    """Anonymous resident memory of ``pid`` (``RssAnon``: heap and arrays, not mapped file pages), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pids: Iterable[int]) -> int:
    """The largest resident memory now of the processes ``pids``, bytes."""
    return max(psutil.Process(pid).memory_info().rss for pid in pids)


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


# --- garbage collection --------------------------------------------------------------------------------

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
