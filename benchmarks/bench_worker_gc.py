"""Worker garbage collection: the processor on Dask with the workers' GC tuned (the default) and as Python sets it.

    .venv/bin/python benchmarks/bench_worker_gc.py [--events 2000000] [--turns 3] [--runs 6] [--json FILE]

On the processing benchmark's release layout (16 files), local clusters of 1 and 2 workers with
``cluster.local.gc_threshold`` at its default (objects alive after the imports frozen, the youngest generation
collected every 20000 allocations) and at ``null`` (Python's 700, nothing frozen: the baseline) take turns; in
each turn a fresh cluster of each kind is warmed up with one run, then runs ``--runs`` times. Every worker records
the time its collections take (``gc.callbacks``).

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {events, turns, runs},
``files``, ``gc_settings`` [{name, gc_threshold}] and ``runs`` [{setting, workers, wall_s, cpu_s, gc_s}] (CPU
seconds of the client and the workers, GC seconds summed over the workers); ``benchmarks/render.py`` makes the
"## Worker garbage collection" section of it (per setting: the workers' GC seconds per run, median, mean and
largest; median wall and CPU seconds; the 2-worker / 1-worker speed-up of the median walls).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _lib import output
from _lib.data import PROCESSING_DATA, processing_dataset
from _lib.readers import processor_run
from _lib.timing import cluster_cpu, gc_seconds, record_gc

from deploy.clusters import dask_client, resolve_config

#: The workers' GC as configured by default (cluster.local.gc_threshold), and as Python sets it.
SETTINGS = {"tuned (default)": resolve_config(None).local.gc_threshold, "Python's": None}


def measure(files: list[str], *, workers: int, threshold: int | None, runs: int) -> list[dict[str, float]]:
    """Wall s, CPU s and the workers' GC s of ``runs`` runs on a fresh warmed-up cluster."""
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
            rows.append({"wall_s": wall, "cpu_s": used, "gc_s": sum(client.run(gc_seconds).values())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--data", type=Path, default=PROCESSING_DATA)
    output.add_arguments(parser, "--no-write")
    args = parser.parse_args()
    document = output.start("worker_gc", output.command("bench_worker_gc.py", args, "events", "turns", "runs"),
                            {"events": args.events, "turns": args.turns, "runs": args.runs})

    files = processing_dataset(args.data, args.events)
    runs = []
    for _ in range(args.turns):
        for workers in (1, 2):
            for name, threshold in SETTINGS.items():
                runs += [{"setting": name, "workers": workers, **row}
                         for row in measure(files, workers=workers, threshold=threshold, runs=args.runs)]
    document.update({"files": len(files),
                     "gc_settings": [{"name": name, "gc_threshold": value} for name, value in SETTINGS.items()],
                     "runs": runs})
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
