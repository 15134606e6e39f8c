"""Processing throughput: the diphoton processor against a bare uproot read, the tutorial's loop and coffea.

    .venv/bin/python benchmarks/bench_processing.py [--events 2000000] [--repeat 3] [--runs 3]
        [--layouts release,single,release-zlib,single-zlib] [--data DIR] [--json FILE]

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

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {events, repeat, runs,
layouts}, ``dask_overhead`` {cpu_ms_per_task, idle_percent_of_core} and ``layouts``: [{layout, files, events,
dask_tasks, readers: [{name, runs: [{events, wall_s, cpu_s, baseline: [before, after]}]}]}], ``baseline`` being
the bare read's events per CPU second just before and just after the run; ``benchmarks/render.py`` makes the
"## Processing" section of it.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uproot

from _lib import output, sections
from _lib.data import LAYOUTS, PROCESSING_DATA, processing_dataset
from _lib.readers import (
    LAST_TASKS,
    Baseline,
    Reader,
    bare_read,
    coffea_runner,
    fused_tutorial_loop,
    in_process,
    on_cluster,
    parallel_bare,
    processor_run,
    tutorial_loop,
)
from _lib.timing import cluster_cpu

from deploy.clusters import dask_client


def paired_runs(readers: dict[str, Callable[[], contextlib.AbstractContextManager[Reader]]], repeat: int, runs: int,
                baseline: Callable[[], float]) -> dict[str, list[dict[str, Any]]]:
    """Measure each reader ``repeat`` x ``runs`` times, each run between two runs of ``baseline``.

    ``readers`` maps names to context managers that yield a :class:`Reader`, each run ``runs`` times per
    turn (a fresh cluster's first run still pays for its start-up); the readers take turns. CPU seconds
    count every process a reader uses, so events per CPU second is the throughput per core. ``baseline``
    (the bare read in a process of its own, where no cluster idles) returns its events per CPU second; each
    run records the baseline runs just before and just after it, whose geometric mean the run is compared with
    (which cancels most of the drift in a shared machine's speed).
    """
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in readers}
    for _ in range(repeat):
        for name, session in readers.items():
            with session() as reader:
                before = baseline()
                for _ in range(runs):
                    cpu, start = reader.cpu_seconds(), time.perf_counter()
                    events = reader.run()
                    wall, cpu = time.perf_counter() - start, reader.cpu_seconds() - cpu
                    after = baseline()
                    samples[name].append({"events": events, "wall_s": wall, "cpu_s": cpu, "baseline": [before, after]})
                    before = after
    return samples


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


def measure(files: list[str], args: argparse.Namespace, *, zlib: bool) -> dict[str, Any]:
    """Every reader on ``files``, paired with the bare read in a process of its own.

    ``zlib``: the baskets are ZLIB, so the bare read with uproot's default inflater is measured too.
    """
    events = bare_read(files)  # also fills the page cache
    baseline = Baseline(files)
    defaults = {sections.BARE_ZLIB: lambda: in_process(lambda: bare_read(files), inflater="zlib")} if zlib else {}
    try:
        runs = paired_runs(
            {
                sections.BARE: lambda: in_process(lambda: bare_read(files)),
                sections.BARE_MMAP: lambda: in_process(
                    lambda: bare_read(files, handler=uproot.source.file.MemmapSource)),
                **defaults,
                sections.TUTORIAL: lambda: in_process(lambda: tutorial_loop(files), plain=True),
                sections.FUSED: lambda: in_process(lambda: fused_tutorial_loop(files), plain=True),
                sections.EAGER: lambda: in_process(lambda: processor_run(files)),
                sections.RUNNER: lambda: in_process(lambda: coffea_runner(files), plain=True),
                sections.BARE2: lambda: parallel_bare(files),
                sections.DASK1: lambda: on_cluster(files, 1),
                sections.DASK2: lambda: on_cluster(files, 2),
            },
            args.repeat,
            args.runs,
            baseline,
        )
    finally:
        baseline.close()
    return {"files": len(files), "events": events, "dask_tasks": LAST_TASKS["dask"],
            "readers": [{"name": name, "runs": done} for name, done in runs.items()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="turns of all readers")
    parser.add_argument("--runs", type=int, default=3, help="runs per reader and turn")
    parser.add_argument("--layouts", default="release,single",
                        help=f"file layouts: {', '.join(LAYOUTS)} (release: 16 files; -zlib: ZLIB baskets)")
    parser.add_argument("--data", type=Path, default=PROCESSING_DATA, help="where the file sets are kept")
    output.add_arguments(parser, "--no-write")
    args = parser.parse_args()

    layouts = [name for name in args.layouts.split(",") if name]
    document = output.start("processing", output.command("bench_processing.py", args, "events", "repeat", "runs",
                                                         "layouts"),
                            {"events": args.events, "repeat": args.repeat, "runs": args.runs, "layouts": layouts})
    document["layouts"] = []
    for layout in layouts:
        files = processing_dataset(args.data, args.events, layout)
        document["layouts"].append({"layout": layout, **measure(files, args, zlib=layout.endswith("-zlib"))})
    per_task, idle = dask_overhead()
    document["dask_overhead"] = {"cpu_ms_per_task": per_task, "idle_percent_of_core": idle}
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
