"""Scaling to full Run-2: throughput, memory per worker and 1 -> 2 worker scaling at 1x, 2x and 4x a base size.

    .venv/bin/python benchmarks/bench_scaling.py [--base-lumi 36.1] [--base-scale 0.5] [--sizes 1,2,4]
        [--workers 1,2] [--chunksizes 100000,250000,500000,1000000,whole] [--repeat 1] [--quick] [--json FILE]

One run measures, on the same files and in this order:

* datasets at each size ``k``: ``generate_dataset(lumi_fb=k * base_lumi, scale=base_scale)`` (16 files, LZ4,
  50k-entry clusters), generated once and cached under ``--data-dir`` (generation is not timed here);
* baselines, each in a fresh single process: ``_lib.readers.bare_read`` (uproot reading the six photon
  branches, nothing else, with the engine's reading settings) and ``_lib.readers.tutorial_loop`` (the
  notebook's loop: iterate + awkward + vector cuts, the kept events concatenated, on uproot as installed);
* the engine (``process_files`` + ``DiphotonProcessor``) on a fresh local Dask cluster of 1 and 2 workers
  (cluster start-up and worker imports excluded), at the engine's default chunk size;
* sweeps on the ``--sweep-size`` set with 1 worker: chunk size, and the 6 branches the processor needs
  against all 80 of the schema.

The files are read once before every measurement (page cache warm: the disk is not measured) and every
process does its imports and a warm-up on the smallest file before the clock starts. Per measurement: wall
time (the best of ``--repeat`` turns; at each size every reader runs once per turn, and the 1 -> 2 worker
scaling is the median of the turns' ratios), events/s, events/s per core (per worker process; the
baselines use one core), peak RSS per process (sampled every 50 ms with psutil, and the kernel's high-water mark ``VmHWM``; the
larger is reported) and bytes read (compressed size of the branches read, which is what uproot requests for
whole-file ranges, headers aside). Then a model, not a measurement: the full Run-2 skim on 200 cores at the
measured per-core rate, with the engine's chunk plan.

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` (the options), ``engine``
{default_chunksize, task_chunks, file_open_entries}, ``run2`` {lumi_fb, events_per_fb}, ``seconds`` (the run's),
``sizes`` [{size, lumi_fb, files, events, disk_bytes, branch_bytes_6, branch_bytes_all, generated_s}], ``runs``,
``sweeps`` and ``task_sweeps`` [{label, size, events, workers, wall, walls, peak_rss, idle_rss, bytes_read, chunks,
client_rss_growth, peak_anon, tasks}: seconds and bytes] and ``extrapolation`` {cores, size, per_core, rows:
[{chunksize, events, chunks, tasks, wall_s}]}; ``benchmarks/render.py`` makes the "## Scaling" section of it.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import heapq
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

from _lib import output, sections
from _lib.data import branch_bytes, luminosity_dataset, page_cache
from _lib.readers import ALL_BRANCHES, AllBranchesProcessor, bare_read, plain_uproot, share_by_size, tutorial_loop, warm_worker
from _lib.sections import Measurement, chunk_label
from _lib.timing import RssSampler, max_rss_bytes, rss_bytes

from deploy.clusters import dask_client
from processors.datasets import PERIODS
from processors.engine import (
    DEFAULT_CHUNKSIZE,
    FILE_OPEN_ENTRIES,
    TASK_CHUNKS,
    FileInfo,
    group_chunks,
    most_parts,
    plan_chunks,
    process_files,
    spread_parts,
)
from processors.generate import DEFAULT_SEED, EVENTS_PER_FB
from processors.processor import DiphotonProcessor

#: Luminosity of the full Run 2 (2015-18), fb^-1, for the extrapolation.
RUN2_LUMI_FB = 140.0
#: Cores of the extrapolation.
MODEL_CORES = 200


# --- baselines, each in a fresh process --------------------------------------------------------------


def _baseline_task(kind: str, files: list[str]) -> tuple[float, int, int, int]:
    function = {"bare": bare_read, "tutorial": tutorial_loop}[kind]
    # The tutorial runs on uproot as installed; the bare read, the floor, with the engine's reading settings.
    with plain_uproot() if kind == "tutorial" else contextlib.nullcontext():
        function(files[:1])  # warm-up on the first (smallest) file, like the engine's workers
        idle = rss_bytes([os.getpid()])
        with RssSampler([os.getpid()]) as sampler:
            start = time.perf_counter()
            events = function(files)
            wall = time.perf_counter() - start
    return wall, events, max_rss_bytes(), idle, max(sampler.peak_anon.values())


def baseline(kind: str, files: list[str], *, size: int, repeat: int, bytes_read: int) -> Measurement:
    """Run :func:`~_lib.readers.bare_read` or :func:`~_lib.readers.tutorial_loop` in a fresh process ``repeat`` times."""
    walls, peak, idle, events, anon = [], 0, 0, 0, 0
    context = multiprocessing.get_context("spawn")
    for _ in range(repeat):
        page_cache(files)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            wall, events, rss, before, peak_anon = pool.submit(_baseline_task, kind, files).result()
        walls.append(wall)
        peak, idle, anon = max(peak, rss), max(idle, before), max(anon, peak_anon)
    label = {"bare": "bare uproot read (6 branches)", "tutorial": "tutorial loop"}[kind]
    return Measurement(label, size, events, 1, min(walls), tuple(walls), peak, idle, bytes_read, 0, 0, anon)


def _parallel_bare_task(files: list[str], barrier: Any, queue: Any) -> None:
    bare_read(files[-1:])  # warm-up on the smallest file of the share
    idle = rss_bytes([os.getpid()])
    barrier.wait()  # both processes have done their imports and warm-up
    start = time.time()
    events = bare_read(files)
    queue.put((start, time.time(), events, max_rss_bytes(), idle))


def parallel_bare(files: list[str], *, size: int, repeat: int, bytes_read: int, processes: int = 2) -> Measurement:
    """``bare_read`` in ``processes`` processes at once, files shared by size: the machine's own scaling ceiling."""
    shares = share_by_size(files, processes)
    context = multiprocessing.get_context("spawn")
    walls, peak, idle, events = [], 0, 0, 0
    for _ in range(repeat):
        page_cache(files)
        barrier, queue = context.Barrier(processes), context.Queue()
        workers = [context.Process(target=_parallel_bare_task, args=(share, barrier, queue)) for share in shares]
        for worker in workers:
            worker.start()
        results = [queue.get() for _ in workers]
        for worker in workers:
            worker.join()
        walls.append(max(r[1] for r in results) - min(r[0] for r in results))
        events = sum(r[2] for r in results)
        peak, idle = max(peak, *(r[3] for r in results)), max(idle, *(r[4] for r in results))
    return Measurement(f"bare uproot read, {processes} processes at once", size, events, processes,
                       min(walls), tuple(walls), peak, idle, bytes_read, 0, 0)


# --- the engine on a fresh local cluster -------------------------------------------------------------


def engine(
    files: list[str], *, size: int, workers: int, chunksize: int, repeat: int, all_branches: bool, bytes_read: int,
    task_chunks: int | None = None,
) -> Measurement:
    """``process_files`` on a fresh ``workers``-process local cluster; memory sampled on every worker."""
    processor = AllBranchesProcessor() if all_branches else DiphotonProcessor()
    options = {"chunksize": chunksize, "task_entries": None if task_chunks is None else task_chunks * chunksize}
    walls, peak, idle, growth, result, anon = [], 0, 0, 0, None, 0
    for _ in range(repeat):
        page_cache(files)
        with dask_client(workers=workers) as client:
            pids = list(client.run(warm_worker).values())
            process_files(files[:1], processor=processor, client=client, chunksize=chunksize, progress=False)
            idle = max(idle, rss_bytes(pids))
            me = os.getpid()
            with RssSampler([*pids, me]) as sampler:
                before = rss_bytes([me])
                result = process_files(files, processor=processor, client=client, progress=False, **options)
            high_water = max(client.run(max_rss_bytes).values())
        if result.failed_chunks or result.events_processed != result.events_in_files:
            raise RuntimeError(f"incomplete run: {result.failed_chunks[:3]}")
        walls.append(result.wall_time)
        peak = max(peak, high_water, *(sampler.peak[pid] for pid in pids))
        growth = max(growth, sampler.peak[me] - before)
        anon = max(anon, *(sampler.peak_anon[pid] for pid in pids))
    label = ("engine, all 80 branches" if all_branches else "engine") + (
        "" if chunksize == DEFAULT_CHUNKSIZE else f", chunks {chunk_label(chunksize)}"
    ) + ("" if task_chunks in (None, TASK_CHUNKS) else f", tasks of {task_chunks} chunk{'s' if task_chunks > 1 else ''}")
    return Measurement(
        label, size, result.events_processed, workers, min(walls), tuple(walls), peak, idle,
        bytes_read, result.chunks, growth, anon, result.tasks,
    )


def merge(measurements: list[Measurement]) -> Measurement:
    """One reader's runs of several turns as one measurement: the best wall, every wall in turn order, peaks."""
    first = measurements[0]
    return first._replace(
        wall=min(m.wall for m in measurements),
        walls=tuple(w for m in measurements for w in m.walls),
        peak_rss=max(m.peak_rss for m in measurements),
        idle_rss=max(m.idle_rss for m in measurements),
        client_rss_growth=max(m.client_rss_growth for m in measurements),
        peak_anon=max(m.peak_anon for m in measurements),
    )


# --- extrapolation -----------------------------------------------------------------------------------


def extrapolate(per_core: float, *, cores: int, chunksize: int, bytes_per_entry: float, open_seconds: float,
                lumi: float = RUN2_LUMI_FB, cluster: int = 50_000) -> tuple[int, int, int, float]:
    """Wall time to process the GamGam skim at ``lumi`` on ``cores`` cores, every core at ``per_core`` events/s.

    Files as generated here (16 period files, ``lumi`` shared like 2015-16, ``cluster``-entry clusters, of
    ``bytes_per_entry`` on disk), chunks planned by the engine (with fewer files than cores, a file is started
    in as many parts as it has room for, :func:`~processors.engine.spread_parts`, and cut into a multiple of
    them, each part's chunks grouped into tasks of the engine's default size), tasks handed longest first to the
    next free core, which pays ``open_seconds`` for the first task of each file it reads. No I/O, start-up or
    scheduling cost is modelled. Returns (events, chunks, tasks, seconds).
    """
    total_lumi = sum(period.lumi_fb for period in PERIODS)
    counts = [int(round(period.lumi_fb / total_lumi * lumi * EVENTS_PER_FB)) for period in PERIODS]
    names = sorted((f"f{number}" for number in range(len(counts))), key=lambda name: -counts[int(name[1:])])
    most = {name: most_parts(counts[int(name[1:])] * bytes_per_entry, chunksize=chunksize, fraction=1.0)
            for name in names}
    parts = collections.Counter(name for name, _ in spread_parts(names, cores, most=most))
    chunks, tasks = 0, []
    for number, count in enumerate(counts):
        info = FileInfo(f"f{number}", count, tuple(range(0, count, cluster)) + (count,))
        plan = plan_chunks(info, tree="t", chunksize=chunksize, fraction=1.0, multiple=parts[info.file])
        chunks += len(plan)
        for part in range(parts[info.file]):
            tasks += [(sum(c.entry_stop - c.entry_start for c in group), info.file)
                      for group in group_chunks(plan[part::parts[info.file]], TASK_CHUNKS * chunksize)]
    # (time free, core); a core pays for opening a file the first time it reads a task of it.
    free, opened = [(0.0, core) for core in range(min(cores, len(tasks)))], collections.defaultdict(set)
    for events, name in sorted(tasks, reverse=True):
        when, core = heapq.heappop(free)
        cost = events / per_core + (0.0 if name in opened[core] else open_seconds)
        opened[core].add(name)
        heapq.heappush(free, (when + cost, core))
    return sum(counts), chunks, len(tasks), max(when for when, _ in free)


def _progress(m: Measurement) -> None:
    print(sections.scaling_row(m), file=sys.stderr, flush=True)


# --- main --------------------------------------------------------------------------------------------


def _chunksize(text: str) -> int:
    return sections.WHOLE_FILE if text in ("whole", "file", "0") else int(float(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/opendata-bench"))
    parser.add_argument("--base-lumi", type=float, default=36.1, help="luminosity of the 1x set, fb^-1")
    parser.add_argument("--base-scale", type=float, default=0.5, help="fraction of the luminosity's events written")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--sizes", default="1,2,4", help="multiples of the base luminosity")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--chunksizes", default="100000,250000,500000,1000000,whole")
    parser.add_argument("--task-chunks", default="1,2,4", help="task sizes of the sweep, in chunks (both worker counts)")
    parser.add_argument("--sweep-size", type=int, default=None, help="size of the sweeps (default: the largest)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="validation: base scale 0.02, sizes 1,2, two chunk sizes")
    output.add_arguments(parser, "--no-write")
    args = parser.parse_args()
    if args.quick:  # smaller defaults; options given explicitly win
        given = {a.split("=")[0] for a in sys.argv[1:]}
        args.base_scale = args.base_scale if "--base-scale" in given else 0.02
        args.sizes = args.sizes if "--sizes" in given else "1,2"
        args.chunksizes = args.chunksizes if "--chunksizes" in given else "100000,whole"
    size_list = [int(x) for x in args.sizes.split(",")]
    args.workers = [int(x) for x in args.workers.split(",")]
    args.sweep_size = args.sweep_size or max(size_list)
    chunksizes = [_chunksize(x) for x in args.chunksizes.split(",") if x]
    task_chunk_list = [int(x) for x in args.task_chunks.split(",") if x]

    names = ("base_lumi", "base_scale", "seed", "sizes", "workers", "chunksizes", "task_chunks", "sweep_size", "repeat")
    document = output.start("scaling", output.command("bench_scaling.py", args, *names),
                            {"base_lumi": args.base_lumi, "base_scale": args.base_scale, "seed": args.seed,
                             "sizes": size_list, "workers": args.workers, "chunksizes": chunksizes,
                             "task_chunks": task_chunk_list, "sweep_size": args.sweep_size, "repeat": args.repeat})
    document["engine"] = {"default_chunksize": DEFAULT_CHUNKSIZE, "task_chunks": TASK_CHUNKS,
                          "file_open_entries": FILE_OPEN_ENTRIES}
    document["run2"] = {"lumi_fb": RUN2_LUMI_FB, "events_per_fb": EVENTS_PER_FB}
    start = time.perf_counter()
    sizes: dict[int, dict[str, Any]] = {}
    for k in size_list:
        files, generated = luminosity_dataset(args.data_dir, lumi=k * args.base_lumi, scale=args.base_scale,
                                              seed=args.seed)
        bytes6, _ = branch_bytes(files, DiphotonProcessor.columns)
        bytes_all, _ = branch_bytes(files, ALL_BRANCHES)
        truth = json.loads((Path(files[0]).parent / "truth.json").read_text())
        sizes[k] = {"files": files, "events": truth["events_written"], "bytes6": bytes6, "bytes_all": bytes_all,
                    "disk": sum(os.path.getsize(f) for f in files)}
        document.setdefault("sizes", []).append(
            {"size": k, "lumi_fb": k * args.base_lumi, "files": len(files), "events": truth["events_written"],
             "disk_bytes": sizes[k]["disk"], "branch_bytes_6": bytes6, "branch_bytes_all": bytes_all,
             "generated_s": generated})
        note = f"generated in {generated:.0f} s" if generated is not None else "cached"
        print(f"{k}x: {len(files)} files, {truth['events_written']:,} events, {note}", file=sys.stderr, flush=True)

    runs: list[Measurement] = []
    for k, info in sizes.items():
        files, turns = info["files"], []
        # Turns of every reader, one run each, so that ratios can be taken within a turn: a shared machine's speed
        # drifts within minutes, and runs minutes apart would compare the moments, not the readers.
        for _ in range(args.repeat):
            turn = [baseline(kind, files, size=k, repeat=1, bytes_read=info["bytes6"]) for kind in ("bare", "tutorial")]
            if 2 in args.workers:
                turn.append(parallel_bare(files, size=k, repeat=1, bytes_read=info["bytes6"]))
            turn += [engine(files, size=k, workers=workers, chunksize=DEFAULT_CHUNKSIZE, repeat=1, all_branches=False,
                            bytes_read=info["bytes6"]) for workers in args.workers]
            turns.append(turn)
        for measurements in zip(*turns):
            runs.append(merge(list(measurements)))
            _progress(runs[-1])

    def turns_engine(workers: int) -> Measurement | None:
        """The turns' engine run at the sweep size: a sweep's default point, not measured again."""
        return next((m for m in runs if m.size == args.sweep_size and m.label == "engine" and m.workers == workers), None)

    sweeps: list[Measurement] = []
    info = sizes[args.sweep_size]
    for chunksize in chunksizes:
        previous = turns_engine(1)
        if chunksize == DEFAULT_CHUNKSIZE and previous:
            sweeps.append(previous)
        else:
            sweeps.append(engine(info["files"], size=args.sweep_size, workers=1, chunksize=chunksize, repeat=args.repeat,
                                 all_branches=False, bytes_read=info["bytes6"]))
        _progress(sweeps[-1])
    sweeps.append(engine(info["files"], size=args.sweep_size, workers=1, chunksize=DEFAULT_CHUNKSIZE, repeat=args.repeat,
                         all_branches=True, bytes_read=info["bytes_all"]))
    _progress(sweeps[-1])
    # Task size: several chunks per task cost the scheduler less, which two workers on two cores feel most.
    task_sweeps: list[Measurement] = []
    for workers in args.workers:
        for task_chunks in task_chunk_list:
            previous = turns_engine(workers)
            if task_chunks == TASK_CHUNKS and previous:
                task_sweeps.append(previous)
            else:
                task_sweeps.append(engine(info["files"], size=args.sweep_size, workers=workers, chunksize=DEFAULT_CHUNKSIZE,
                                          repeat=args.repeat, all_branches=False, bytes_read=info["bytes6"],
                                          task_chunks=task_chunks))
            _progress(task_sweeps[-1])

    document["runs"] = [m._asdict() for m in runs]
    document["sweeps"] = [m._asdict() for m in sweeps]
    document["task_sweeps"] = [m._asdict() for m in task_sweeps]
    large = max(sizes)
    one = next((m for m in runs if m.label == "engine" and m.size == large and m.workers == 1), None)
    if one:
        rows = []
        for chunksize in (DEFAULT_CHUNKSIZE, 100_000):
            events, chunks, ntasks, wall = extrapolate(one.per_core, cores=MODEL_CORES, chunksize=chunksize,
                                                       bytes_per_entry=sizes[large]["disk"] / sizes[large]["events"],
                                                       open_seconds=FILE_OPEN_ENTRIES / one.per_core)
            rows.append({"chunksize": chunksize, "events": events, "chunks": chunks, "tasks": ntasks, "wall_s": wall})
        document["extrapolation"] = {"cores": MODEL_CORES, "size": large, "per_core": one.per_core, "rows": rows}
    document["seconds"] = time.perf_counter() - start
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
