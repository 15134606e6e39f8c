"""Processing throughput: the diphoton processor against a bare uproot read, the tutorial's loop and coffea.

    /work/venv/bin/python benchmarks/bench_processing.py [--events 2000000] [--repeat 2] [--no-write]

Generates (or reuses) a GamGam file set, then measures in one run, single process unless stated:

* bare read: uproot reading the six photon branches, nothing else (the floor of any processor);
* tutorial: ``uproot.iterate`` + awkward + vector with jagged ``[:, 0]`` indexing, as the tutorial does;
* processor: ``process_files`` without Dask, then on a local Dask cluster with 1 and 2 worker processes
  (cluster start-up excluded, workers warmed up);
* coffea Runner: ``processor.Runner(IterativeExecutor(), schema=BaseSchema, chunksize=500_000)``.

Each is the best of ``--repeat`` runs (the files are in the page cache after the first). Prints a table and,
unless ``--no-write``, replaces the "## Processing" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

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


def dataset(directory: Path, events: int) -> list[str]:
    """The benchmark's files, generated once and reused while the event count matches."""
    marker = directory / f"events-{events}"
    if not marker.exists():
        generate_dataset(directory, events=events, seed=2016, basket_entries=100_000)
        marker.touch()
    return sorted(str(p) for p in directory.glob("*.root"))


def bare_read(files: list[str]) -> int:
    entries = 0
    for name in files:
        with uproot.open(name) as file:
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


def best_rate(function: Callable[[], int], repeat: int) -> float:
    """Events per second of the fastest of ``repeat`` runs."""
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        events = function()
        rates.append(events / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("/tmp/opendata-stats-bench/processing"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    files = dataset(args.data, args.events)
    events = bare_read(files)  # also fills the page cache
    rates = {
        "bare uproot read (6 branches)": best_rate(lambda: bare_read(files), args.repeat),
        "tutorial loop (iterate + awkward + vector)": best_rate(lambda: tutorial_loop(files), args.repeat),
        "processor, no Dask": best_rate(lambda: processor_run(files), args.repeat),
        "coffea Runner, BaseSchema, 500k chunks": best_rate(lambda: coffea_runner(files), args.repeat),
    }
    for workers in (1, 2):
        with dask_client(workers=workers) as client:
            processor_run(files[:1], client)  # warm up: imports on the workers
            rates[f"processor, Dask {workers} worker(s)"] = best_rate(lambda: processor_run(files, client), args.repeat)

    bare = rates["bare uproot read (6 branches)"]
    tutorial = rates["tutorial loop (iterate + awkward + vector)"]
    one = rates["processor, Dask 1 worker(s)"]
    rows = [
        f"| {name} | {rate / 1e6:.2f} | {rate / bare:.2f} | {rate / tutorial:.2f} |" for name, rate in rates.items()
    ]
    table = [
        f"`python benchmarks/bench_processing.py --events {args.events} --repeat {args.repeat}` on "
        f"{machine()}; "
        f"{events:,} events in {len(files)} generated files (ZSTD), best of {args.repeat}, "
        f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| reader | M events/s | / bare read | / tutorial |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Targets (issue 2): processor per core >= 0.80 x bare read: "
        f"{rates['processor, no Dask'] / bare:.2f}; >= 1.5 x tutorial: {rates['processor, no Dask'] / tutorial:.2f}; "
        f"2 workers >= 1.8 x 1 worker: {rates['processor, Dask 2 worker(s)'] / one:.2f}.",
    ]
    print("\n".join(table))
    if not args.no_write:
        replace_section(SECTION, table)


if __name__ == "__main__":
    main()
