"""Processing throughput: the diphoton processor against a bare uproot read, the tutorial's loop and coffea.

    .venv/bin/python benchmarks/bench_processing.py [--events 2000000] [--repeat 3] [--runs 3]
        [--layouts release,single,release-zlib,single-zlib] [--no-write]

Generates (or reuses) GamGam file sets of ``--events`` events in two layouts, the release's 16 period files
(most of them small, so that opening files weighs) and one file of all the events (where decompression
dominates), with the generator's LZ4 baskets or (``-zlib``) ROOT's default ZLIB(1), which real files have, then
measures in one run on each, single process unless stated:

* bare read: uproot reading the six photon branches, nothing else (the floor of any processor), with
  uproot's default source and with the memory-mapped one the engine uses for local files, inflating ZLIB
  baskets with isal as the engine does (processors.tuning.configure_uproot), and on the ``-zlib`` layouts
  also with uproot's default inflater, Python's zlib;
* tutorial: the notebook's loop (``tree.iterate`` at uproot's default step size, every cut filtering the
  record array with jagged ``[:, 0]`` indexing, the vector mass stored as a field, the kept events
  concatenated), with uproot's defaults (zlib, no cached class names); beside it a leaner version of it
  (1 M-entry steps, the last two cuts fused, histogrammed per step);
* processor: ``process_files`` without Dask, then on a local Dask cluster with 1 and 2 worker processes
  (cluster start-up excluded, workers warmed up);
* two bare reads at once, in two processes sharing the files (a single file by entry ranges): what this
  machine gives two busy processes, the ceiling of two workers' speed-up and per-core rate;
* coffea Runner: ``processor.Runner(IterativeExecutor(), schema=BaseSchema, chunksize=500_000)``, with
  uproot's defaults (zlib, no cached class names).

The readers take turns, ``--repeat`` rounds of ``--runs`` runs each (the files are in the page cache after
the first), and every run sits between two runs of the bare read in a spawned process of its own: the ratio
of the run to those two is what the table reports (median over the runs), since a shared machine's speed
drifts within a minute and the readers' best runs may fall in different moments.

Prints a table and, unless ``--no-write``, replaces the "## Processing" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
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

from _common import machine, plain_uproot, replace_section, uproot_settings

from deploy.clusters import dask_client
from processors.chunks import clear_trees
from processors.engine import process_files
from processors.generate import DEFAULT_COMPRESSION, generate_dataset
from processors.processor import DiphotonProcessor

COLUMNS = list(DiphotonProcessor.columns)
SECTION = "## Processing"
#: Tasks of the last Dask run of the processor (what Dask's per-task cost is multiplied by).
TASKS: dict[str, int] = {}


#: File layouts measured, as (periods, basket compression): the release's (one file per data-taking period, most
#: of them small) and a single file (where decompression, not opening 16 files, dominates the bare read); the
#: ``-zlib`` layouts are the same files compressed as ROOT does by default, which decompress slower than the
#: generator's LZ4.
LAYOUTS = {
    "release": (None, DEFAULT_COMPRESSION),
    "single": (["data16_periodL"], DEFAULT_COMPRESSION),
    "release-zlib": (None, uproot.ZLIB(1)),
    "single-zlib": (["data16_periodL"], uproot.ZLIB(1)),
}


def dataset(directory: Path, events: int, layout: str = "release") -> list[str]:
    """The benchmark's files, generated once and reused while the event count matches."""
    directory = directory if layout == "release" else directory.with_name(f"{directory.name}-{layout}")
    marker = directory / f"events-{events}"
    if not marker.exists():
        periods, compression = LAYOUTS[layout]
        generate_dataset(directory, events=events, seed=2016, basket_entries=100_000, periods=periods,
                         compression=compression)
        marker.touch()
    return sorted(str(p) for p in directory.glob("*.root"))


def timed_bare_read(files: list[str]) -> tuple[int, float]:
    """(events, CPU seconds) of :func:`bare_read` in the calling process."""
    start = time.process_time()
    events = bare_read(files)
    return events, time.process_time() - start


def bare_read(files: list[str], **options) -> int:
    entries = 0
    for name in files:
        with uproot.open(name, **options) as file:
            arrays = file["analysis"].arrays(COLUMNS, how=dict)
            entries += len(arrays["photon_pt"])
    return entries


def _bare_share(share: list[tuple[str, int, int | None]]) -> tuple[int, float]:
    """(events, CPU seconds) of a bare read of (file, entry start, entry stop) ranges, in the calling process."""
    start, entries = time.process_time(), 0
    for name, first, stop in share:
        with uproot.open(name) as file:
            entries += len(file["analysis"].arrays(COLUMNS, entry_start=first, entry_stop=stop, how=dict)["photon_pt"])
    return entries, time.process_time() - start


def bare_shares(files: list[str], processes: int) -> list[list[tuple[str, int, int | None]]]:
    """The files shared by size between ``processes`` bare reads; a single file is shared by entry ranges."""
    if len(files) == 1:
        with uproot.open(files[0]) as file:
            entries = file["analysis"].num_entries
        edges = [entries * k // processes for k in range(processes + 1)]
        return [[(files[0], a, b)] for a, b in zip(edges, edges[1:])]
    return [[(name, 0, None) for name in share] for share in share_by_size(files, processes)]


def share_by_size(files: list[str], processes: int) -> list[list[str]]:
    """``files`` shared between ``processes`` readers, each next largest file to the least loaded (bytes)."""
    shares: list[list[str]] = [[] for _ in range(processes)]
    load = [0] * processes
    for name in sorted(files, key=lambda f: -Path(f).stat().st_size):
        index = load.index(min(load))
        shares[index].append(name)
        load[index] += Path(name).stat().st_size
    return shares


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


def processor_run(files: list[str], client=None) -> int:
    # Start cold like the other readers: no tree left open by the previous repetition.
    if client is not None:
        client.run(clear_trees)
    result = process_files(files, processor=DiphotonProcessor(), client=client, progress=False)
    assert not result.failed_chunks
    TASKS["dask" if client is not None else "eager"] = result.tasks
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
def in_process(run: Callable[[], int], *, inflater: str | None = None, plain: bool = False) -> Iterator[Reader]:
    """``run`` in this process; ``inflater`` (e.g. uproot's default "zlib") replaces the engine's for ZLIB baskets;
    ``plain``: uproot's defaults altogether (:func:`_common.plain_uproot`), as the tutorial runs."""
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
    import concurrent.futures
    import multiprocessing

    shares, used = bare_shares(files, processes), [0.0]

    def run() -> int:
        results = [pool.submit(_bare_share, share) for share in shares]
        outcomes = [r.result() for r in results]
        used[0] += sum(cpu for _, cpu in outcomes)
        return sum(events for events, _ in outcomes)

    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in range(2):  # start every process, imports and first open outside the measurement
            [r.result() for r in [pool.submit(_bare_share, share) for share in shares]]
        yield Reader(run, lambda: time.process_time() + used[0])


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


class Rates(NamedTuple):
    """A reader's runs: best events per wall and per CPU second, median of the latter, median paired ratio,
    and the events per wall second of every run (turn by turn)."""

    wall: float
    cpu: float
    cpu_median: float
    vs_bare: float
    walls: tuple[float, ...]


def paired_rates(readers: dict[str, Callable[[], Any]], repeat: int, runs: int, baseline: Callable[[], float]) -> dict[str, Rates]:
    """Measure each reader ``repeat`` x ``runs`` times, each run between two runs of ``baseline``.

    ``readers`` maps names to context managers that yield a :class:`Reader`, each run ``runs`` times per
    turn (a fresh cluster's first run still pays for its start-up); the readers take turns. CPU seconds
    count every process a reader uses, so events per CPU second is the throughput per core. ``baseline``
    (the bare read in a process of its own, where no cluster idles) returns its events per CPU second; the
    ratio of each run to the geometric mean of the baseline runs just before and just after it cancels most of
    the drift in a shared machine's speed, and its median over the runs
    is the reader's ratio to the bare read.
    """
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in readers}
    for _ in range(repeat):
        for name, session in readers.items():
            with session() as reader:
                before = baseline()
                for _ in range(runs):
                    cpu, start = reader.cpu_seconds(), time.perf_counter()
                    events = reader.run()
                    wall, cpu = time.perf_counter() - start, reader.cpu_seconds() - cpu
                    after = baseline()
                    reference = math.sqrt(before * after)
                    samples[name].append((events / wall, events / cpu, events / cpu / reference))
                    before = after
    return {
        name: Rates(max(s[0] for s in runs_), max(s[1] for s in runs_), statistics.median(s[1] for s in runs_),
                    statistics.median(s[2] for s in runs_), tuple(s[0] for s in runs_))
        for name, runs_ in samples.items()
    }


class Baseline:
    """The bare read in a spawned process of its own, run on demand; returns its events per CPU second."""

    def __init__(self, files: list[str]) -> None:
        import concurrent.futures
        import multiprocessing

        self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._files = files
        self()  # imports and the first open stay outside the measurement

    def __call__(self) -> float:
        events, cpu = self._pool.submit(timed_bare_read, self._files).result()
        return events / cpu

    def close(self) -> None:
        self._pool.shutdown()


#: The bare read with uproot's default inflater; only measured where baskets are ZLIB.
BARE_ZLIB = "bare uproot read, Python's zlib (uproot's default)"


def measure(files: list[str], args: argparse.Namespace, *, zlib: bool) -> tuple[int, dict[str, Rates], int]:
    """Every reader on ``files``, paired with the bare read in a process of its own: (events, rates, Dask tasks).

    ``zlib``: the baskets are ZLIB, so the bare read with uproot's default inflater is measured too.
    """
    events = bare_read(files)  # also fills the page cache
    baseline = Baseline(files)
    defaults = {BARE_ZLIB: lambda: in_process(lambda: bare_read(files), inflater="zlib")} if zlib else {}
    try:
        rates = paired_rates(
            {
                "bare uproot read (6 branches)": lambda: in_process(lambda: bare_read(files)),
                "bare uproot read, memory-mapped": lambda: in_process(
                    lambda: bare_read(files, handler=uproot.source.file.MemmapSource)),
                **defaults,
                "tutorial loop (iterate + awkward + vector)": lambda: in_process(
                    lambda: tutorial_loop(files), plain=True),
                "tutorial's cuts, fused, 1 M-entry steps": lambda: in_process(
                    lambda: fused_tutorial_loop(files), plain=True),
                "processor, no Dask": lambda: in_process(lambda: processor_run(files)),
                "coffea Runner, BaseSchema, 500k chunks": lambda: in_process(
                    lambda: coffea_runner(files), plain=True),
                "bare uproot read, 2 processes at once": lambda: parallel_bare(files),
                "processor, Dask 1 worker": lambda: on_cluster(files, 1),
                "processor, Dask 2 workers": lambda: on_cluster(files, 2),
            },
            args.repeat,
            args.runs,
            baseline,
        )
    finally:
        baseline.close()
    return events, rates, TASKS["dask"]


def per_turn(one: Rates, other: Rates, runs: int) -> list[float]:
    """Wall-clock speed of ``other`` over ``one`` in each turn (medians of the turn's runs)."""
    def turns(rates: Rates) -> list[float]:
        return [statistics.median(rates.walls[k:k + runs]) for k in range(0, len(rates.walls), runs)]
    return [b / a for a, b in zip(turns(one), turns(other))]


def layout_table(layout: str, files: list[str], events: int, rates: dict[str, Rates], tasks: int, per_task: float,
                 idle: float, runs: int) -> list[str]:
    """The table and the checks of one file layout (``tasks``: of a Dask run of the processor)."""
    tutorial = rates["tutorial loop (iterate + awkward + vector)"].vs_bare
    eager, one, two = (rates[name] for name in ("processor, no Dask", "processor, Dask 1 worker", "processor, Dask 2 workers"))
    rows = [
        f"| {name} | {r.wall / 1e6:.2f} | {r.cpu / 1e6:.2f} | {r.cpu_median / 1e6:.2f} | {r.vs_bare:.2f} | "
        f"{r.vs_bare / tutorial:.2f} |"
        for name, r in rates.items()
    ]
    bare, bare2 = rates["bare uproot read (6 branches)"], rates["bare uproot read, 2 processes at once"]
    scaling, ceiling = per_turn(one, two, runs), per_turn(bare, bare2, runs)
    dask_fixed = tasks * per_task / 1e3 + idle / 100 * events / one.wall
    gap = events / one.cpu_median - events / eager.cpu_median
    what = (f"{len(files)} files as the release splits 2015-16 into periods, about {events / len(files) / 1e3:.0f}k events "
            "each on average" if layout.startswith("release") else "one file, as in the issue")
    what += ", ZLIB(1) like ROOT's default and the issue's file" if layout.endswith("-zlib") else ", LZ4 (the generator's default)"
    return [
        f"### {events:,} events in {what}",
        "",
        "| reader | M events / wall s (best) | M events / CPU s (best) | M events / CPU s (median) | per core / bare read "
        "| per core / tutorial |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Targets (issue 2), per core: processor >= 0.80 x bare read: {eager.vs_bare:.2f} without Dask, "
        f"{one.vs_bare:.2f} on one Dask worker, {two.vs_bare:.2f} on two; >= 1.5 x tutorial: "
        f"{eager.vs_bare / tutorial:.2f}, {one.vs_bare / tutorial:.2f}, {two.vs_bare / tutorial:.2f}. Wall clock, "
        f"2 workers / 1 worker >= 1.8: {statistics.median(scaling):.2f}, the median of the turns' ratios "
        f"({', '.join(f'{x:.2f}' for x in scaling)}; best runs {two.wall / one.wall:.2f}). Two bare reads at once, on "
        f"this machine: {bare2.vs_bare:.2f} per core of one, and {statistics.median(ceiling):.2f} x its wall-clock "
        f"speed ({', '.join(f'{x:.2f}' for x in ceiling)}); two workers per core / two bare reads per core: "
        f"{two.vs_bare / bare2.vs_bare:.2f}.",
        *([] if BARE_ZLIB not in rates else [
            "",
            f"Against the bare read with uproot's default inflater (zlib; the engine inflates with isal), per core: "
            f"{eager.vs_bare / rates[BARE_ZLIB].vs_bare:.2f} without Dask, {one.vs_bare / rates[BARE_ZLIB].vs_bare:.2f}"
            f" on one Dask worker, {two.vs_bare / rates[BARE_ZLIB].vs_bare:.2f} on two; that read is "
            f"{rates[BARE_ZLIB].vs_bare / tutorial:.2f} x the tutorial.",
        ]),
        "",
        f"Dask's own cost here: {tasks} tasks (files smaller than a chunk share one) at {per_task:.1f} ms, plus the idle"
        f" cost over a run, make {dask_fixed:.2f} CPU s; the median 1-worker run takes {gap:+.2f} CPU s more than the"
        " median run without Dask.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="turns of all readers")
    parser.add_argument("--runs", type=int, default=3, help="runs per reader and turn")
    parser.add_argument("--layouts", default="release,single",
                        help="file layouts: release (16 files), single, and release-zlib, single-zlib (ZLIB baskets)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/opendata-stats-bench/processing"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = machine()
    layouts = [name for name in args.layouts.split(",") if name]
    results = {}
    for layout in layouts:
        files = dataset(args.data, args.events, layout)
        results[layout] = (files, *measure(files, args, zlib=layout.endswith("-zlib")))
    per_task, idle = dask_overhead()
    table = [
        f"`python benchmarks/bench_processing.py --events {args.events} --repeat {args.repeat} --runs {args.runs}"
        f" --layouts {args.layouts}` on {header}; started {started}, {args.repeat} turns x {args.runs} runs of each"
        " reader.",
        "",
        f"Every run sits between two runs of the bare read in a process of its own (no cluster in it); the ratios are"
        f" the medians over the {args.repeat * args.runs} runs of each reader of its events per CPU second over the"
        f" geometric mean of those two. Dask's own cost, measured in the same run on a 1-worker cluster: {per_task:.1f} ms of CPU per"
        f" no-op task (client, scheduler and worker), and {idle:.1f} % of a core while the cluster idles.",
        "",
    ]
    for layout, (files, events, rates, tasks) in results.items():
        table += layout_table(layout, files, events, rates, tasks, per_task, idle, args.runs)
    table += [
        "Per core means events per CPU second of every process involved (client and workers), which other work on a",
        "shared machine disturbs far less than wall time. What the processor does to get there: it reads only the",
        "six branches, memory-maps local files, inflates ZLIB baskets with isal, opens each file once (per-process",
        "tree cache; the TTree's ~80 branch descriptions cost as much as reading and selecting 130k-240k events) and",
        "has uproot normalize each class name of those descriptions once per process, not once per object,",
        "processes a file's first chunks in the task that opens it, runs up to two chunks per task (one after the",
        "other: memory follows the chunk, the scheduler's cost the task), packs files smaller than a task into shared",
        "tasks (largest first, shrinking to single files at the end), starts a file on every worker at once when",
        "there are fewer files than workers (each then reads its",
        "part's equal share of the file's chunks), fetches finished tasks' results in the background, takes the two",
        "leading photons from the jagged layout's offsets with numpy (three transcendental functions per pair for",
        "the mass). Its local Dask workers run without the statistical profiler, check their event loops every 200",
        "ms instead of 20 ms, have glibc keep freed memory for the next chunk (MALLOC_TRIM_THRESHOLD_ 256 MiB,",
        "MALLOC_MMAP_THRESHOLD_ 32 MiB) instead of page-faulting fresh memory for every chunk (Dask's own",
        "MALLOC_TRIM_THRESHOLD_=65536 made chunk tasks ~1.7x slower), and freeze the objects alive after start-up",
        "and collect young garbage every 20000 allocations (Python's settings spent ~0.2 s of a 1.1 s 1-worker run",
        "collecting; see Worker garbage collection): cluster.local.profile, tick_interval, environ, gc_threshold.",
        "The processor without Dask runs in this process with glibc's defaults. The tutorial loop and coffea's",
        "Runner run with uproot's defaults (zlib, class names normalized per object); every other reader inflates",
        "with isal and normalizes each class name once, the bare reads included.",
    ]
    print("\n".join(table))
    if not args.no_write:
        replace_section(SECTION, table)


if __name__ == "__main__":
    main()
