"""The project's engine against coffea's ``processor.Runner`` with the futures executor, 2 workers each, same files.

    .venv/bin/python benchmarks/bench_coffea_runner.py [--events 2000000] [--runs 3] [--workers 2]
        [--chunksize 500000] [--layouts release,release-zlib] [--json FILE]

Both run ``DiphotonProcessor`` over the same generated files (``_lib.data.processing_dataset``: the release's 16
period files, with the generator's LZ4 baskets and, ``-zlib``, ROOT's default ZLIB), at the same chunk size, with
the same number of worker processes and the same uproot settings: memory-mapped local reads (the engine's source
for local files; the Runner gets ``uproot_options={"handler": MemmapSource}``) and
``processors.tuning.configure_uproot`` (ZLIB baskets inflated with isal, class names normalized once) in every
process, which the Runner's workers call through :class:`TunedProcessor`. Measured per layout, in turns
(``--runs`` turns, the readers one after the other in each, so that a shared machine's drift hits them alike):

* ``engine``: ``process_files`` on ``dask_client(workers=N)``, the cluster ``opendata-stats process --workers N``
  starts (the packaged config), started and warmed up by one run before the clock; the trees its workers keep
  open are closed before every run, so that it opens every file anew, as the Runner does;
* ``runner_futures_warm``: ``Runner(FuturesExecutor(workers=N, pool=<one loky pool for all runs>))``, its pool's
  processes started and warmed up by one run before the clock: the Runner's steady state beside the engine's;
* ``runner_futures``: ``Runner(FuturesExecutor(workers=N))`` as a notebook writes it: a new pool of N processes per
  call (their start and imports are in the time);
* ``cold``: once per layout, the wall time of a whole command in a fresh interpreter: ``opendata-stats process
  FILES --workers N`` (imports, cluster start, processing, writing) and this script's ``--child-runner`` (imports,
  ``runner_futures``).

Every Runner run gets an empty metadata cache, so it opens each file for its entry count as the engine does.
Each run records events per wall second of the call and per CPU second of every process involved (this one and
all its descendants: on a shared machine the wall clock also measures the neighbours, the CPU clock less so).

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {events, workers,
chunksize, runs, layouts, uproot} and ``layouts``: {LAYOUT: {files, events, runs: {READER: [{events, seconds,
cpu_seconds, events_per_s, events_per_cpu_s}]}, medians: {events_per_s, events_per_cpu_s: {READER: median}},
ratios: {events_per_s, events_per_cpu_s: {engine_over_READER: the median of the turns' ratios}}, cold:
{opendata_stats_process_s, runner_script_s}}}; ``benchmarks/render.py`` makes the "## The engine and coffea's
Runner" section of it.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loky
import uproot
from coffea import processor as coffea_processor
from coffea.nanoevents import BaseSchema

from _lib import output
from _lib.data import PROCESSING_DATA, processing_dataset
from _lib.timing import tree_cpu

from deploy.clusters import dask_client
from processors.chunks import clear_trees
from processors.engine import process_files
from processors.processor import DiphotonProcessor
from processors.tuning import configure_uproot

# This process (and the cold Runner's, which runs this script) reads with the engine's settings; the Runner's
# workers set them in TunedProcessor.
configure_uproot()

#: The engine's reading source for local files, given to the Runner too.
UPROOT_OPTIONS = {"handler": uproot.source.file.MemmapSource}


class TunedProcessor(DiphotonProcessor):
    """The diphoton processor that first sets this project's uproot settings in the process it runs in (once: a
    second ``configure_uproot`` changes nothing), as the engine's tasks do on its workers."""

    def process(self, events):
        configure_uproot()
        return super().process(events)


def runner_run(files: list[str], *, workers: int, chunksize: int, pool: Any = None) -> int:
    """One ``Runner`` call over ``files``; the events it processed."""
    options = {"workers": workers, "status": False} | ({"pool": pool} if pool is not None else {})
    runner = coffea_processor.Runner(executor=coffea_processor.FuturesExecutor(**options), schema=BaseSchema,
                                     chunksize=chunksize, metadata_cache={})  # fmt: skip
    # FuturesExecutor draws coffea's progress bars whatever its status says, on stdout: that is the JSON's.
    with contextlib.redirect_stdout(sys.stderr):
        output = runner({"data": files}, processor_instance=TunedProcessor(), treename="analysis",
                        uproot_options=UPROOT_OPTIONS)  # fmt: skip
    return int(output["events"])


def engine_run(files: list[str], client: Any, *, chunksize: int) -> int:
    # Cold like the Runner, which opens every file anew in each run: no tree left open by the previous run.
    client.run(clear_trees)
    result = process_files(files, processor=DiphotonProcessor(), client=client, chunksize=chunksize, progress=False)
    assert not result.failed_chunks
    return result.events_processed


def timed(run: Callable[[], int]) -> dict[str, float]:
    """One run: events, wall and CPU seconds (all processes), events per wall second and per CPU second."""
    start, cpu = time.perf_counter(), tree_cpu()
    events = run()
    seconds, cpu = time.perf_counter() - start, tree_cpu() - cpu
    return {"events": events, "seconds": round(seconds, 4), "cpu_seconds": round(cpu, 3),
            "events_per_s": round(events / seconds), "events_per_cpu_s": round(events / cpu)}  # fmt: skip


def cold(files: list[str], *, workers: int, chunksize: int) -> dict[str, float]:
    """Wall seconds of ``opendata-stats process`` and of a Runner script, each in a fresh interpreter."""
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="bench-coffea-runner-") as out:
        commands = {
            "opendata_stats_process_s": [sys.executable, "-m", "deploy.cli", "process", *files, "--workers",
                                         str(workers), "--chunksize", str(chunksize), "--out", out],
            "runner_script_s": [sys.executable, __file__, "--child-runner", "--workers", str(workers),
                                "--chunksize", str(chunksize), *files],
        }  # fmt: skip
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds[name] = round(time.perf_counter() - start, 3)
    return seconds


def measure(files: list[str], *, workers: int, chunksize: int, runs: int) -> dict[str, Any]:
    runs_of: dict[str, list[dict[str, float]]] = {"engine": [], "runner_futures_warm": [], "runner_futures": []}
    pool = loky.ProcessPoolExecutor(max_workers=workers)
    try:
        with dask_client(workers=workers, announce=False) as client:
            readers = {
                "engine": lambda: engine_run(files, client, chunksize=chunksize),
                "runner_futures_warm": lambda: runner_run(files, workers=workers, chunksize=chunksize, pool=pool),
                "runner_futures": lambda: runner_run(files, workers=workers, chunksize=chunksize),
            }
            events = {name: read() for name, read in list(readers.items())[:2]}  # warm-ups, outside the clock
            assert events["engine"] == events["runner_futures_warm"], events
            for _ in range(runs):
                for name, read in readers.items():
                    runs_of[name].append(timed(read))
    finally:
        pool.shutdown()
    medians, ratios = {}, {}
    for unit in ("events_per_s", "events_per_cpu_s"):
        medians[unit] = {name: round(statistics.median(run[unit] for run in done)) for name, done in runs_of.items()}
        ratios[unit] = {
            f"engine_over_{name}": round(statistics.median(
                engine[unit] / other[unit] for engine, other in zip(runs_of["engine"], runs_of[name])
            ), 3)
            for name in ("runner_futures_warm", "runner_futures")
        }  # fmt: skip
    return {"events": events["engine"], "medians": medians, "ratios": ratios, "runs": runs_of,
            "cold": cold(files, workers=workers, chunksize=chunksize)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3, help="turns of all readers")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=500_000, help="entries per chunk, both (the engine's default)")
    parser.add_argument("--layouts", default="release,release-zlib", help="file layouts (_lib.data.LAYOUTS)")
    parser.add_argument("--data", type=Path, default=PROCESSING_DATA)
    parser.add_argument("--child-runner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    output.add_arguments(parser)
    args = parser.parse_args()
    if args.child_runner:  # the cold Runner: this process's imports and one Runner call
        runner_run(args.files, workers=args.workers, chunksize=args.chunksize)
        return

    layouts = [name for name in args.layouts.split(",") if name]
    names = ("events", "runs", "workers", "chunksize", "layouts")
    document = output.start("coffea_runner", output.command("bench_coffea_runner.py", args, *names), {
        "events": args.events, "workers": args.workers, "chunksize": args.chunksize, "runs": args.runs,
        "layouts": layouts,
        "uproot": "memory-mapped local reads; configure_uproot (isal, class names once) in every process"})
    document["layouts"] = {}
    for layout in layouts:
        files = processing_dataset(args.data, args.events, layout)
        document["layouts"][layout] = {"files": len(files),
                                       **measure(files, workers=args.workers, chunksize=args.chunksize, runs=args.runs)}  # fmt: skip
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
