"""Worker garbage collection: the processor on Dask with the workers' GC tuned (the default) and as Python sets it.

    .venv/bin/python benchmarks/bench_worker_gc.py [--events 2000000] [--turns 3] [--runs 6] [--no-write]

On bench_processing's release layout (16 files), local clusters of 1 and 2 workers with
``cluster.local.gc_threshold`` at its default (objects alive after the imports frozen, the youngest generation
collected every 20000 allocations) and at ``null`` (Python's 700, nothing frozen) take turns; in each turn a
fresh cluster of each kind is warmed up with one run, then runs ``--runs`` times. Every worker records the
time its collections take (``gc.callbacks``). Reported per setting: the workers' GC seconds per run (median,
mean and largest: a full collection falls every few runs), wall time and CPU seconds of the client and workers
(medians), and the 2-worker / 1-worker speed-up of the median walls.

Prints a table and, unless ``--no-write``, replaces the "## Worker garbage collection" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import gc_seconds, machine, record_gc, replace_section
from bench_processing import cluster_cpu, dataset, processor_run

from deploy.clusters import dask_client, resolve_config

SECTION = "## Worker garbage collection"
#: The workers' GC as configured by default (cluster.local.gc_threshold), and as Python sets it.
SETTINGS = {"tuned (default)": resolve_config(None).local.gc_threshold, "Python's": None}


def measure(files: list[str], *, workers: int, threshold: int | None, runs: int) -> list[tuple[float, float, float]]:
    """(wall s, CPU s, workers' GC s) of ``runs`` runs on a fresh warmed-up cluster."""
    config = resolve_config(None)
    config = config._replace(local=config.local._replace(gc_threshold=threshold))
    rows = []
    with dask_client(config, workers=workers, announce=False) as client:
        processor_run(files, client)
        client.run(record_gc)
        cpu = cluster_cpu(client)
        for _ in range(runs):
            client.run(gc_seconds)  # forget what the previous run (and the warm-up) collected
            used, start = cpu(), time.perf_counter()
            processor_run(files, client)
            wall, used = time.perf_counter() - start, cpu() - used
            rows.append((wall, used, sum(client.run(gc_seconds).values())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--data", type=Path, default=Path("/tmp/opendata-stats-bench/processing"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    files = dataset(args.data, args.events)
    rows: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.turns):
        for workers in (1, 2):
            for name, threshold in SETTINGS.items():
                rows.setdefault((name, workers), []).extend(
                    measure(files, workers=workers, threshold=threshold, runs=args.runs))

    table = [
        f"`python benchmarks/bench_worker_gc.py --events {args.events} --turns {args.turns} --runs {args.runs}` on"
        f" {machine()}; started {started}. {len(files)} files (bench_processing's release layout); per setting and"
        f" worker count {args.turns} fresh clusters x {args.runs} runs, the settings taking turns.",
        "",
        "| workers' GC | workers | GC s per run (median) | GC s per run (mean) | GC s (largest) | wall s (median)"
        " | CPU s (median) | 2 workers / 1 (median walls) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        walls = {w: statistics.median(r[0] for r in rows[name, w]) for w in (1, 2)}
        for workers in (1, 2):
            gcs = [r[2] for r in rows[name, workers]]
            speedup = f"{walls[1] / walls[2]:.2f}" if workers == 2 else ""
            table.append(
                f"| {name} | {workers} | {statistics.median(gcs):.3f} | {statistics.mean(gcs):.3f} | {max(gcs):.3f} |"
                f" {walls[workers]:.3f} | {statistics.median(r[1] for r in rows[name, workers]):.3f} | {speedup} |")
    table += [
        "",
        "GC seconds are summed over the workers. Each opened file leaves a few thousand objects in reference cycles"
        " (uproot's branch descriptions) that only the collector frees; with Python's settings a full collection also"
        " walks the ~200k objects of Dask, uproot and awkward alive in every worker.",
    ]
    print("\n".join(table))
    if not args.no_write:
        replace_section(SECTION, table)


if __name__ == "__main__":
    main()
