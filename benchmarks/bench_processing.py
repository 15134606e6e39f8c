"""Processing throughput: the diphoton processor against a bare uproot read, the tutorial's loop and coffea.

    /work/venv/bin/python benchmarks/bench_processing.py [--events 2000000] [--repeat 2] [--no-write]

Generates (or reuses) a GamGam file set, then measures in one run, single process unless stated:

* bare read: uproot reading the six photon branches, nothing else (the floor of any processor), with
  uproot's default source and with the memory-mapped one the engine uses for local files;
* tutorial: ``uproot.iterate`` + awkward + vector with jagged ``[:, 0]`` indexing, as the tutorial does;
* processor: ``process_files`` without Dask, then on a local Dask cluster with 1 and 2 worker processes
  (cluster start-up excluded, workers warmed up);
* coffea Runner: ``processor.Runner(IterativeExecutor(), schema=BaseSchema, chunksize=500_000)``.

The readers take turns, ``--repeat`` rounds, and each keeps its fastest run (the files are in the page cache
after the first), so load from other processes on the machine hits them alike.

Prints a table and, unless ``--no-write``, replaces the "## Processing" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
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

from _common import machine, replace_section

from deploy.clusters import dask_client
from processors.chunks import clear_trees
from processors.engine import process_files
from processors.generate import generate_dataset
from processors.processor import DiphotonProcessor

COLUMNS = list(DiphotonProcessor.columns)
SECTION = "## Processing"
#: Runs per reader and turn: a fresh cluster's first run still pays for its start-up (scheduler and workers
#: settling), so each session runs twice, every reader alike.
RUNS_PER_SESSION = 2


def dataset(directory: Path, events: int) -> list[str]:
    """The benchmark's files, generated once and reused while the event count matches."""
    marker = directory / f"events-{events}"
    if not marker.exists():
        generate_dataset(directory, events=events, seed=2016, basket_entries=100_000)
        marker.touch()
    return sorted(str(p) for p in directory.glob("*.root"))


def bare_read(files: list[str], **options) -> int:
    entries = 0
    for name in files:
        with uproot.open(name, **options) as file:
            arrays = file["analysis"].arrays(COLUMNS, how=dict)
            entries += len(arrays["photon_pt"])
    return entries


def tutorial_loop(files: list[str]) -> int:
    """The tutorial's cuts as written there (jagged indexing, vector), with its 1 M-entry steps."""
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


def processor_run(files: list[str], client=None) -> int:
    # Start cold like the other readers: no tree left open by the previous repetition.
    if client is not None:
        client.run(clear_trees)
    result = process_files(files, processor=DiphotonProcessor(), client=client, progress=False)
    assert not result.failed_chunks
    return result.events_processed


def coffea_runner(files: list[str]) -> int:
    runner = coffea_processor.Runner(
        executor=coffea_processor.IterativeExecutor(), schema=BaseSchema, chunksize=500_000
    )
    return runner({"data": files}, processor_instance=DiphotonProcessor(), treename="analysis")["events"]


class Reader(NamedTuple):
    """A way of reading the files (returns the events read) and the CPU clock of the processes it uses."""

    run: Callable[[], int]
    cpu_seconds: Callable[[], float] = time.process_time


def cluster_cpu(client) -> Callable[[], float]:
    """CPU seconds so far of the client process and every worker of ``client``."""
    return lambda: time.process_time() + sum(client.run(time.process_time).values())


@contextlib.contextmanager
def in_process(run: Callable[[], int]) -> Iterator[Reader]:
    yield Reader(run)


@contextlib.contextmanager
def on_cluster(files: list[str], workers: int) -> Iterator[Reader]:
    """The processor on a fresh local cluster of ``workers`` processes, the only cluster alive meanwhile.

    (An idle cluster beside it would put its heartbeats on the client's CPU clock.) Start-up and a warm-up
    run (imports on the workers) stay outside the measurement.
    """
    with dask_client(workers=workers) as client:
        processor_run(files[:2], client)
        yield Reader(lambda: processor_run(files, client), cluster_cpu(client))


def _noop(value: int) -> int:
    return value


def dask_overhead(tasks: int = 160, idle_seconds: float = 4.0) -> tuple[float, float]:
    """Dask's own cost on this machine: CPU ms per no-op task (client + worker), and % of a core while idle."""
    from distributed import as_completed

    with dask_client(workers=1, announce=False) as client:
        cpu = cluster_cpu(client)
        client.submit(_noop, 0, pure=False).result()
        start = cpu()
        for future in as_completed([client.submit(_noop, i, pure=False) for i in range(tasks)]):
            future.result()
        per_task = (cpu() - start) / tasks * 1e3
        start = cpu()
        time.sleep(idle_seconds)
        idle = (cpu() - start) / idle_seconds * 100
    return per_task, idle


def best_rates(readers: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, float]]:
    """(events per wall second, events per CPU second) of each reader's fastest of ``repeat`` runs.

    ``readers`` maps names to context managers that yield a :class:`Reader`, each run
    :data:`RUNS_PER_SESSION` times per turn. The readers take turns,
    which spreads the load of anything else running on the machine over all of them alike. CPU seconds
    count every process a reader uses, so events per CPU second is the throughput per core, and far
    less sensitive than wall time to other processes on the machine.
    """
    rates = {name: (0.0, 0.0) for name in readers}
    for _ in range(repeat):
        for name, session in readers.items():
            with session() as reader:
                for _ in range(RUNS_PER_SESSION):
                    cpu, start = reader.cpu_seconds(), time.perf_counter()
                    events = reader.run()
                    wall, cpu = time.perf_counter() - start, reader.cpu_seconds() - cpu
                    rates[name] = (max(rates[name][0], events / wall), max(rates[name][1], events / cpu))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("/tmp/opendata-stats-bench/processing"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    files = dataset(args.data, args.events)
    events = bare_read(files)  # also fills the page cache
    rates = best_rates(
        {
            "bare uproot read (6 branches)": lambda: in_process(lambda: bare_read(files)),
            "bare uproot read, memory-mapped": lambda: in_process(
                lambda: bare_read(files, handler=uproot.source.file.MemmapSource)),
            "tutorial loop (iterate + awkward + vector)": lambda: in_process(lambda: tutorial_loop(files)),
            "processor, no Dask": lambda: in_process(lambda: processor_run(files)),
            "coffea Runner, BaseSchema, 500k chunks": lambda: in_process(lambda: coffea_runner(files)),
            "processor, Dask 1 worker": lambda: on_cluster(files, 1),
            "processor, Dask 2 workers": lambda: on_cluster(files, 2),
        },
        args.repeat,
    )

    per_task, idle = dask_overhead()
    bare_wall, bare = rates["bare uproot read (6 branches)"]
    tutorial = rates["tutorial loop (iterate + awkward + vector)"][1]
    eager, one, two = (rates[name][1] for name in ("processor, no Dask", "processor, Dask 1 worker", "processor, Dask 2 workers"))
    rows = [
        f"| {name} | {wall / 1e6:.2f} | {cpu / 1e6:.2f} | {cpu / bare:.2f} | {cpu / tutorial:.2f} |"
        for name, (wall, cpu) in rates.items()
    ]
    scaling = rates["processor, Dask 2 workers"][0] / rates["processor, Dask 1 worker"][0]
    dask_fixed = len(files) * per_task / 1e3 + idle / 100 * events / rates["processor, Dask 1 worker"][0]
    gap = events / one - events / eager
    table = [
        f"`python benchmarks/bench_processing.py --events {args.events} --repeat {args.repeat}` on {machine()}; "
        f"{events:,} events in {len(files)} generated files, best of {args.repeat} turns x {RUNS_PER_SESSION} runs, "
        f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| reader | M events / wall s | M events / CPU s (per core) | per core / bare read | per core / tutorial |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Targets (issue 2), per core: processor >= 0.80 x bare read: {eager / bare:.2f} without Dask, "
        f"{one / bare:.2f} on one Dask worker, {two / bare:.2f} on two; >= 1.5 x tutorial: {eager / tutorial:.2f}, "
        f"{one / tutorial:.2f}, {two / tutorial:.2f}. Wall clock, 2 workers / 1 worker >= 1.8: {scaling:.2f} "
        f"(needs two idle cores: see the load average above).",
        "",
        f"Dask's own cost, measured in the same run on a 1-worker cluster: {per_task:.1f} ms of CPU per no-op task"
        f" (client, scheduler and worker), and {idle:.1f} % of a core while the cluster idles (heartbeats, monitors,"
        f" the worker's profiler). For the {len(files)} tasks here (one per file of about"
        f" {events / len(files) / 1e3:.0f}k events) that is {dask_fixed:.2f} CPU s of the {gap:.2f} CPU s by which the"
        " 1-worker run exceeds the run without Dask.",
        "",
        "Per core means events per CPU second of every process involved (client and workers), which other work",
        "on a shared machine disturbs far less than wall time. What the processor does to get there: it reads",
        "only the six branches, memory-maps local files, opens each file once (per-process tree cache; the",
        "TTree's ~80 branch descriptions cost as much as reading 100k events), processes a file's first chunk in",
        "the task that opens it, takes the two leading photons from the jagged layout's offsets with numpy, and",
        "its local Dask workers keep glibc's dynamic mmap threshold (Dask's MALLOC_TRIM_THRESHOLD_ made chunk",
        "tasks ~1.7x slower than the same code in the client process).",
    ]
    print("\n".join(table))
    if not args.no_write:
        replace_section(SECTION, table)


if __name__ == "__main__":
    main()
