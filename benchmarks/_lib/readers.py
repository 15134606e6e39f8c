"""Ways of reading the benchmark files, each returning the events it read, and the uproot settings they read with.

Importing this module has uproot read as the engine does in this process (``processors.tuning.configure_uproot``:
isal for ZLIB baskets, class names normalized once); so does every spawned process that unpickles a reader from
here. :func:`plain_uproot` turns that off within a block (the tutorial and coffea's Runner run on uproot as
installed).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import awkward as ak
import numpy as np
import uproot
import vector
from coffea import processor as coffea_processor
from coffea.nanoevents import BaseSchema

from deploy.clusters import dask_client
from processors.chunks import clear_trees
from processors.engine import process_files
from processors.processor import DiphotonProcessor
from processors.schema import BRANCHES
from processors.tuning import configure_uproot

from .timing import cluster_cpu

configure_uproot()

#: The six photon branches the processor reads.
COLUMNS = list(DiphotonProcessor.columns)
#: Every branch of the schema (what "read all branches" means in the benchmarks).
ALL_BRANCHES = tuple(branch.name for branch in BRANCHES)
#: Dask tasks of the last :func:`processor_run`, by kind ("dask" or "eager").
LAST_TASKS: dict[str, int] = {}


class AllBranchesProcessor(DiphotonProcessor):
    """The diphoton processor, but the engine loads every branch of the tree (the cost of not selecting columns)."""

    columns = ALL_BRANCHES


# --- uproot settings -----------------------------------------------------------------------------------


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
    """uproot as installed, within the block: Python's zlib and no cached class names."""
    return uproot_settings(inflater="zlib", memoized_classnames=False)


# --- the bare read -------------------------------------------------------------------------------------


def bare_read(files: list[str], **options: Any) -> int:
    """uproot reading the six photon branches of every file, nothing else (the floor of any processor)."""
    entries = 0
    for name in files:
        with uproot.open(name, **options) as file:
            arrays = file["analysis"].arrays(COLUMNS, how=dict)
            entries += len(arrays["photon_pt"])
    return entries


def timed_bare_read(files: list[str]) -> tuple[int, float]:
    """(events, CPU seconds) of :func:`bare_read` in the calling process."""
    start = time.process_time()
    events = bare_read(files)
    return events, time.process_time() - start


def bare_share(share: list[tuple[str, int, int | None]]) -> tuple[int, float]:
    """(events, CPU seconds) of a bare read of (file, entry start, entry stop) ranges, in the calling process."""
    start, entries = time.process_time(), 0
    for name, first, stop in share:
        with uproot.open(name) as file:
            entries += len(file["analysis"].arrays(COLUMNS, entry_start=first, entry_stop=stop, how=dict)["photon_pt"])
    return entries, time.process_time() - start


def share_by_size(files: list[str], processes: int) -> list[list[str]]:
    """``files`` shared between ``processes`` readers, each next largest file to the least loaded (bytes)."""
    shares: list[list[str]] = [[] for _ in range(processes)]
    load = [0] * processes
    for name in sorted(files, key=lambda f: -Path(f).stat().st_size):
        index = load.index(min(load))
        shares[index].append(name)
        load[index] += Path(name).stat().st_size
    return shares


def bare_shares(files: list[str], processes: int) -> list[list[tuple[str, int, int | None]]]:
    """The files shared by size between ``processes`` bare reads; a single file is shared by entry ranges."""
    if len(files) == 1:
        with uproot.open(files[0]) as file:
            entries = file["analysis"].num_entries
        edges = [entries * k // processes for k in range(processes + 1)]
        return [[(files[0], a, b)] for a, b in zip(edges, edges[1:])]
    return [[(name, 0, None) for name in share] for share in share_by_size(files, processes)]


# --- the tutorial --------------------------------------------------------------------------------------


def tutorial_loop(files: list[str]) -> int:
    """The tutorial's loop as the notebook writes it, with uproot's default step size.

    Each cut filters the whole record array (jagged ``[:, 0]`` indexing), the mass (vector) is stored as a
    field, the events kept are appended and concatenated per file, and the mass histogrammed from that.
    """
    entries, selected = 0, 0
    for name in files:
        with uproot.open(f"{name}:analysis") as tree:
            sample_data = []
            for data in tree.iterate(COLUMNS, library="ak", entry_stop=tree.num_entries):
                entries += len(data)
                data = data[~((data["photon_isTightID"][:, 0] == False) | (data["photon_isTightID"][:, 1] == False))]  # noqa: E712
                data = data[~((data["photon_pt"][:, 0] < 50) | (data["photon_pt"][:, 1] < 30))]
                data = data[~(((data["photon_ptcone20"][:, 0] / data["photon_pt"][:, 0]) > 0.055)
                              | ((data["photon_ptcone20"][:, 1] / data["photon_pt"][:, 1]) > 0.055))]
                eta = data["photon_eta"]
                data = data[~(((np.abs(eta[:, 0]) < 1.52) & (np.abs(eta[:, 0]) > 1.37))
                              | ((np.abs(eta[:, 1]) < 1.52) & (np.abs(eta[:, 1]) > 1.37)))]
                p4 = vector.zip({"pt": data["photon_pt"], "eta": data["photon_eta"], "phi": data["photon_phi"],
                                 "e": data["photon_e"]})
                data["mass"] = (p4[:, 0] + p4[:, 1]).M
                data = data[~(data["mass"] == 0)]
                data = data[~(((data["photon_pt"][:, 0] / data["mass"]) < 0.35)
                              | ((data["photon_pt"][:, 1] / data["mass"]) < 0.35))]
                sample_data.append(data)
            all_data = ak.concatenate(sample_data)
        counts, _ = np.histogram(ak.to_numpy(all_data["mass"]), bins=60, range=(100, 160))
        selected += int(counts.sum())
    return entries


def fused_tutorial_loop(files: list[str]) -> int:
    """The tutorial's cuts with 1 M-entry steps, the last two fused and histogrammed per step: how much of the
    tutorial's time its step size and separate cuts cost."""
    entries, selected = 0, 0
    for name in files:
        for data in uproot.iterate(f"{name}:analysis", COLUMNS, library="ak", step_size=1_000_000):
            entries += len(data)
            data = data[~((data.photon_isTightID[:, 0] == False) | (data.photon_isTightID[:, 1] == False))]  # noqa: E712
            data = data[~((data.photon_pt[:, 0] < 50) | (data.photon_pt[:, 1] < 30))]
            iso = data.photon_ptcone20 / data.photon_pt
            data = data[~((iso[:, 0] > 0.055) | (iso[:, 1] > 0.055))]
            eta = abs(data.photon_eta)
            data = data[~(((eta[:, 0] > 1.37) & (eta[:, 0] < 1.52)) | ((eta[:, 1] > 1.37) & (eta[:, 1] < 1.52)))]
            p4 = vector.zip({"pt": data.photon_pt, "eta": data.photon_eta, "phi": data.photon_phi, "e": data.photon_e})
            mass = (p4[:, 0] + p4[:, 1]).M
            keep = (mass != 0) & (data.photon_pt[:, 0] / mass > 0.35) & (data.photon_pt[:, 1] / mass > 0.35)
            counts, _ = np.histogram(ak.to_numpy(mass[keep]), bins=60, range=(100, 160))
            selected += int(counts.sum())
    return entries


# --- the processor and coffea --------------------------------------------------------------------------


def processor_run(files: list[str], client: Any = None) -> int:
    """``process_files`` with :class:`DiphotonProcessor`, on ``client``'s cluster or (None) in this process,
    cold: no tree left open by an earlier run. Records its tasks in :data:`LAST_TASKS`."""
    if client is not None:
        client.run(clear_trees)
    result = process_files(files, processor=DiphotonProcessor(), client=client, progress=False)
    assert not result.failed_chunks
    LAST_TASKS["dask" if client is not None else "eager"] = result.tasks
    return result.events_processed


def coffea_runner(files: list[str]) -> int:
    """``processor.Runner(IterativeExecutor(), schema=BaseSchema, chunksize=500_000)`` over ``files``."""
    runner = coffea_processor.Runner(
        executor=coffea_processor.IterativeExecutor(), schema=BaseSchema, chunksize=500_000
    )
    return runner({"data": files}, processor_instance=DiphotonProcessor(), treename="analysis")["events"]


def warm_worker() -> int:
    """Import what a chunk task needs (so the first timed chunk pays no imports); return the worker's pid."""
    import coffea.processor  # noqa: F401
    import hist  # noqa: F401

    import processors.chunks  # noqa: F401
    import processors.processor  # noqa: F401

    return os.getpid()


# --- readers as sessions: a way of reading and the CPU clock of the processes it uses ---------------------


class Reader(NamedTuple):
    """A way of reading the files (returns the events read) and the CPU clock of the processes it uses."""

    run: Callable[[], int]
    cpu_seconds: Callable[[], float] = time.process_time


@contextlib.contextmanager
def in_process(run: Callable[[], int], *, inflater: str | None = None, plain: bool = False) -> Iterator[Reader]:
    """``run`` in this process; ``inflater`` (e.g. uproot's default "zlib") replaces the engine's for ZLIB baskets;
    ``plain``: uproot's defaults altogether (:func:`plain_uproot`), as the tutorial runs."""
    with plain_uproot() if plain else uproot_settings(inflater=inflater):
        yield Reader(run)


@contextlib.contextmanager
def on_cluster(files: list[str], workers: int) -> Iterator[Reader]:
    """The processor on a fresh local cluster of ``workers`` processes, the only cluster alive meanwhile.

    (An idle cluster beside it would put its heartbeats on the client's CPU clock.) Start-up and a warm-up
    run over all the files stay outside the measurement, as for the other readers: the baseline's process
    reads them all once before its first measured run, and the in-process readers ran in earlier turns (a
    fresh worker's first pass page-faults its memory in, many times more than later passes).
    """
    with dask_client(workers=workers) as client:
        processor_run(files, client)
        yield Reader(lambda: processor_run(files, client), cluster_cpu(client))


@contextlib.contextmanager
def parallel_bare(files: list[str], processes: int = 2) -> Iterator[Reader]:
    """The bare read in ``processes`` spawned processes at once, files shared between them: the machine's own
    speed-up and per-core cost of two busy processes, which bound any two workers'."""
    shares, used = bare_shares(files, processes), [0.0]

    def run() -> int:
        results = [pool.submit(bare_share, share) for share in shares]
        outcomes = [r.result() for r in results]
        used[0] += sum(cpu for _, cpu in outcomes)
        return sum(events for events, _ in outcomes)

    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in range(2):  # start every process, imports and first open outside the measurement
            [r.result() for r in [pool.submit(bare_share, share) for share in shares]]
        yield Reader(run, lambda: time.process_time() + used[0])


class Baseline:
    """The bare read in a spawned process of its own, run on demand; returns its events per CPU second."""

    def __init__(self, files: list[str]) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._files = files
        self()  # imports and the first open stay outside the measurement

    def __call__(self) -> float:
        events, cpu = self._pool.submit(timed_bare_read, self._files).result()
        return events / cpu

    def close(self) -> None:
        self._pool.shutdown()
