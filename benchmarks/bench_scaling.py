"""Scaling to full Run-2: throughput, memory per worker and 1 -> 2 worker scaling at 1x, 2x and 4x a base size.

    .venv/bin/python benchmarks/bench_scaling.py [--base-lumi 36.1] [--base-scale 0.5] [--sizes 1,2,4]
        [--workers 1,2] [--chunksizes 100000,250000,500000,1000000,whole] [--repeat 1] [--quick] [--no-write]

One run measures, on the same files and in this order:

* datasets at each size ``k``: ``generate_dataset(lumi_fb=k * base_lumi, scale=base_scale)`` (16 files, LZ4,
  50k-entry clusters), generated once and cached under ``--data-dir`` (generation is not timed here);
* baselines, each in a fresh single process: ``bench_processing.bare_read`` (uproot reading the six photon
  branches, nothing else, with the engine's reading settings) and ``bench_processing.tutorial_loop`` (the
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
whole-file ranges, headers aside). Prints the tables and,
unless ``--no-write``, replaces the "## Scaling" section of BENCHMARKS.md.
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
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ALL_BRANCHES,
    AllBranchesProcessor,
    RssSampler,
    branch_bytes,
    load_average,
    machine,
    max_rss_bytes,
    plain_uproot,
    replace_section,
    warm_worker,
)
from bench_processing import bare_read, share_by_size, tutorial_loop  # noqa: E402

from deploy.clusters import dask_client  # noqa: E402
from processors.engine import (  # noqa: E402
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
from processors.datasets import PERIODS  # noqa: E402
from processors.generate import DEFAULT_SEED, EVENTS_PER_FB, generate_dataset  # noqa: E402
from processors.processor import DiphotonProcessor  # noqa: E402

SECTION = "## Scaling"
WHOLE_FILE = 10**12  # a chunk size no file reaches: one chunk per file
MiB = 2**20
#: Luminosity of the full Run 2 (2015-18), fb^-1, for the extrapolation.
RUN2_LUMI_FB = 140.0


class Measurement(NamedTuple):
    """One timed pass over a file set."""

    label: str
    size: int  # multiple of the base size
    events: int
    workers: int  # processes doing the work (cores used)
    wall: float  # seconds, the best of the repeats
    walls: tuple[float, ...]
    peak_rss: int  # bytes, the largest over the worker processes (and repeats)
    idle_rss: int  # bytes of a worker (the baseline's process) before the run, imports done
    bytes_read: int  # compressed bytes of the branches read
    chunks: int
    client_rss_growth: int  # bytes the client process grew by while merging (engine runs only)
    peak_anon: int = 0  # bytes, peak anonymous RSS (without mapped file pages), sampled
    tasks: int = 0  # Dask tasks (engine runs only)

    @property
    def rate(self) -> float:
        return self.events / self.wall

    @property
    def per_core(self) -> float:
        return self.rate / self.workers


# --- data --------------------------------------------------------------------------------------------


def dataset(data_dir: Path, *, lumi: float, scale: float, seed: int) -> tuple[list[str], float | None]:
    """The files for ``lumi`` x ``scale``, generated into a cache directory the first time; (files, seconds or None)."""
    directory = data_dir / f"lumi{lumi:g}-scale{scale:g}-seed{seed}"
    seconds = None
    if not (directory / "truth.json").exists():  # written last: its presence means a complete set
        start = time.perf_counter()
        generate_dataset(directory, lumi_fb=lumi, scale=scale, seed=seed)
        seconds = time.perf_counter() - start
    return sorted(str(p) for p in directory.glob("*.root")), seconds


def page_cache(files: list[str]) -> None:
    """Read the files once so that every measurement starts from the page cache, not the disk."""
    for path in files:
        with open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass


# --- baselines, each in a fresh process --------------------------------------------------------------


def _baseline_task(kind: str, files: list[str]) -> tuple[float, int, int, int]:
    function = {"bare": bare_read, "tutorial": tutorial_loop}[kind]
    # The tutorial runs on uproot as installed; the bare read, the floor, with the engine's reading settings.
    with plain_uproot() if kind == "tutorial" else contextlib.nullcontext():
        function(files[:1])  # warm-up on the first (smallest) file, like the engine's workers
        idle = _rss([os.getpid()])
        with RssSampler([os.getpid()]) as sampler:
            start = time.perf_counter()
            events = function(files)
            wall = time.perf_counter() - start
    return wall, events, max_rss_bytes(), idle, max(sampler.peak_anon.values())


def baseline(kind: str, files: list[str], *, size: int, repeat: int, bytes_read: int) -> Measurement:
    """Run ``bench_processing.bare_read`` or ``tutorial_loop`` in a fresh process ``repeat`` times."""
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
    idle = _rss([os.getpid()])
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
            idle = max(idle, _rss(pids))
            me = os.getpid()
            with RssSampler([*pids, me]) as sampler:
                before = _rss([me])
                result = process_files(files, processor=processor, client=client, progress=False, **options)
            high_water = max(client.run(max_rss_bytes).values())
        if result.failed_chunks or result.events_processed != result.events_in_files:
            raise RuntimeError(f"incomplete run: {result.failed_chunks[:3]}")
        walls.append(result.wall_time)
        peak = max(peak, high_water, *(sampler.peak[pid] for pid in pids))
        growth = max(growth, sampler.peak[me] - before)
        anon = max(anon, *(sampler.peak_anon[pid] for pid in pids))
    label = ("engine, all 80 branches" if all_branches else "engine") + (
        "" if chunksize == DEFAULT_CHUNKSIZE else f", chunks {_chunk_label(chunksize)}"
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


def _rss(pids: list[int]) -> int:
    return max(psutil.Process(pid).memory_info().rss for pid in pids)


def _chunk_label(chunksize: int) -> str:
    if chunksize >= WHOLE_FILE:
        return "whole file"
    return f"{chunksize // 1000}k" if chunksize < 1_000_000 else f"{chunksize / 1e6:g}M"


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


# --- report ------------------------------------------------------------------------------------------


def _paired(one: Measurement, other: Measurement) -> list[float]:
    """Speed of ``other`` over ``one`` in each turn (same events: the ratio of the walls)."""
    return [a / b for a, b in zip(one.walls, other.walls)]


def _listed(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _row(m: Measurement, *, bare: Measurement | None, tutorial: Measurement | None) -> str:
    spread = f" ({min(m.walls):.1f}-{max(m.walls):.1f})" if len(m.walls) > 1 else ""
    versus = [f"{m.per_core / ref.per_core:.2f}" if ref else "" for ref in (bare, tutorial)]
    return (
        f"| {m.size}x | {m.events / 1e6:.2f} | {m.label} | {m.workers} | {f'{m.chunks} / {m.tasks}' if m.chunks else ''} | {m.wall:.1f}{spread} | "
        f"{m.rate / 1e6:.3f} | {m.per_core / 1e6:.3f} | {versus[0]} | {versus[1]} | {m.peak_rss / MiB:.0f} | {f'{m.peak_anon / MiB:.0f}' if m.peak_anon else ''} | "
        f"{m.idle_rss / MiB:.0f} | {m.bytes_read / MiB:.0f} | {m.bytes_read / MiB / m.wall:.0f} |"
    )


HEADER = [
    "| size | M events | reader | cores | chunks / tasks | wall s | M ev/s | M ev/s/core | /core vs bare | /core vs tutorial "
    "| peak RSS/process MiB | of it anonymous MiB | idle worker MiB | MiB read | MiB/s |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def report(args: argparse.Namespace, sizes: dict[int, dict[str, Any]], runs: list[Measurement], sweeps: list[Measurement],
           task_sweeps: list[Measurement], started: str, load_before: str, load_after: str, seconds: float) -> list[str]:
    def find(label: str, size: int, workers: int = 1) -> Measurement | None:
        return next((m for m in runs if m.label == label and m.size == size and m.workers == workers), None)

    lines = [
        f"`{args.command}`",
        "",
        f"Machine: {machine()}. Started {started}, took {seconds / 60:.1f} min; load average (1/5/15 min) "
        f"{load_before} before, {load_after} after. Wall times are the best of {args.repeat} run(s), the range in brackets; "
        "at each size every reader runs once per turn, and ratios of 1 and 2 workers are taken within a turn.",
        "",
        f"Data sets (generated, {args.seed} seed; the full Run-2 GamGam skim would be {RUN2_LUMI_FB:g} fb^-1 x 1 = "
        f"{RUN2_LUMI_FB * EVENTS_PER_FB / 1e6:.1f} M events):",
        "",
        "| size | lumi fb^-1 x scale | files | M events | MiB on disk | MiB of the 6 branches | MiB of all 80 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, info in sizes.items():
        lines.append(
            f"| {k}x | {info['lumi']:g} x {args.base_scale:g} | {len(info['files'])} | {info['events'] / 1e6:.2f} | "
            f"{info['disk'] / MiB:.0f} | {info['bytes6'] / MiB:.0f} | {info['bytes_all'] / MiB:.0f} |"
        )
    lines += ["", f"Throughput and memory (engine at its default chunk size, {_chunk_label(DEFAULT_CHUNKSIZE)}):", "", *HEADER]
    for m in runs:
        lines.append(_row(m, bare=find("bare uproot read (6 branches)", m.size), tutorial=find("tutorial loop", m.size)))

    small, large = min(sizes), max(sizes)
    checks = []
    for workers in args.workers:
        a, b = find("engine", small, workers), find("engine", large, workers)
        if a and b:
            ratio = b.peak_rss / a.peak_rss
            checks.append(f"peak RSS per worker, {workers} worker(s), {large}x / {small}x = {b.peak_rss / MiB:.0f} / "
                          f"{a.peak_rss / MiB:.0f} MiB = {ratio:.2f} (target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'}); "
                          f"anonymous (without mapped file pages) {b.peak_anon / MiB:.0f} / {a.peak_anon / MiB:.0f} MiB = "
                          f"{b.peak_anon / max(a.peak_anon, 1):.2f}")
    for kind in ("tutorial loop", "bare uproot read (6 branches)"):
        a, b = find(kind, small), find(kind, large)
        if a and b:
            checks.append(f"{kind} peak RSS {large}x / {small}x = {b.peak_rss / MiB:.0f} / {a.peak_rss / MiB:.0f} MiB "
                          f"= {b.peak_rss / a.peak_rss:.2f}")
    if 1 in args.workers and 2 in args.workers:
        for k in sizes:
            one, two = find("engine", k, 1), find("engine", k, 2)
            bare, bare2 = find("bare uproot read (6 branches)", k), find("bare uproot read, 2 processes at once", k, 2)
            if one and two:
                paired = _paired(one, two)
                ratio = statistics.median(paired)
                ceiling = (f"; two bare reads at once reach {statistics.median(_paired(bare, bare2)):.2f} x one "
                           f"(per turn {_listed(_paired(bare, bare2))})" if bare and bare2 else "")
                checks.append(f"scaling 1 -> 2 workers at {k}x: {ratio:.2f}, the median of the turns' ratios "
                              f"{_listed(paired)} (target >= 1.8: {'met' if ratio >= 1.8 else 'NOT met'}); best runs "
                              f"{two.rate / 1e6:.3f} / {one.rate / 1e6:.3f} M ev/s = {two.rate / one.rate:.2f}{ceiling}")
    lines += ["", "Checks:", "", *[f"* {c}" for c in checks]]

    if sweeps:
        lines += ["", f"Sweeps on the {args.sweep_size}x set, 1 worker:", "", *HEADER]
        lines += [_row(m, bare=find("bare uproot read (6 branches)", m.size), tutorial=find("tutorial loop", m.size))
                  for m in sweeps]
        chunk_runs = [m for m in sweeps if "all 80" not in m.label]
        best = max(chunk_runs, key=lambda m: m.rate)
        default = next((m for m in chunk_runs if m.label == "engine"), None)
        if default:
            lines += ["", f"Fastest chunk size: {best.label} at {best.rate / 1e6:.3f} M ev/s, "
                          f"{best.rate / default.rate:.2f} x the default ({_chunk_label(DEFAULT_CHUNKSIZE)}), "
                          f"peak RSS {best.peak_rss / MiB:.0f} vs {default.peak_rss / MiB:.0f} MiB."]
    if task_sweeps:
        lines += ["", f"Task size on the {args.sweep_size}x set, chunks of {_chunk_label(DEFAULT_CHUNKSIZE)} (the engine's default "
                      f"task is {TASK_CHUNKS} chunks' worth; one chunk per task was the engine before):", "", *HEADER]
        lines += [_row(m, bare=find("bare uproot read (6 branches)", m.size), tutorial=find("tutorial loop", m.size))
                  for m in task_sweeps]
        for workers in args.workers:
            mine = [m for m in task_sweeps if m.workers == workers]
            default = next((m for m in mine if m.label == "engine"), None)
            if default:
                lines += ["", f"{workers} worker(s), best walls: default {default.wall:.2f} s; " + "; ".join(
                    f"{m.label.removeprefix('engine, ')} {m.wall:.2f} s ({m.wall / default.wall:.2f} x)"
                    for m in mine if m is not default)]

    one = find("engine", large, 1)
    if one:
        lines += ["", f"Extrapolation (a model, not a measurement) of the GamGam skim at {RUN2_LUMI_FB:g} fb^-1 on 200 "
                      f"cores, each at the {one.per_core / 1e6:.3f} M ev/s per core measured above at {large}x:", "",
                  "| chunk size | events | chunks | tasks | cores busy | wall s |", "|---|---|---|---|---|---|"]
        for chunksize in (DEFAULT_CHUNKSIZE, 100_000):
            events, chunks, ntasks, wall = extrapolate(one.per_core, cores=200, chunksize=chunksize,
                                               bytes_per_entry=sizes[large]["disk"] / sizes[large]["events"],
                                               open_seconds=FILE_OPEN_ENTRIES / one.per_core)
            lines.append(f"| {_chunk_label(chunksize)} | {events / 1e6:.1f} M | {chunks} | {ntasks} | {min(ntasks, 200)} | "
                         f"{wall:.2f} |")
        per_event = one.bytes_read / one.events
        lines += [
            "",
            "Assumptions of the model: every core runs at the per-core rate measured here on local files already in the "
            "page cache; the files are laid out as generated (16 period files sharing the luminosity like 2015-16, "
            "50k-entry clusters); the engine's chunk plan (16 files on 200 cores: each file started in as many parts as "
            "it has room for and cut into a multiple of them, a part's chunks grouped into tasks of about "
            f"{TASK_CHUNKS} chunk sizes), tasks handed longest first to the next free core; a core "
            f"opens a file the first time it reads from it, at the engine's estimate of that cost "
            f"({FILE_OPEN_ENTRIES // 1000}k entries' work, {FILE_OPEN_ENTRIES / one.per_core * 1e3:.0f} ms at this rate); "
            "no cost for starting workers, scheduling or merging. Reading over the network (EOS via XRootD) is "
            f"not measured: at {per_event:.0f} compressed bytes per event for the six branches, 200 cores at this rate "
            f"need {200 * one.per_core * per_event / MiB:.0f} MiB/s from storage, and a slower link bounds the wall "
            "time instead.",
        ]
    return lines


# --- main --------------------------------------------------------------------------------------------


def _chunksize(text: str) -> int:
    return WHOLE_FILE if text in ("whole", "file", "0") else int(float(text))


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
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args()
    args.command = "python benchmarks/bench_scaling.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.quick:  # smaller defaults; options given explicitly win
        given = {a.split("=")[0] for a in sys.argv[1:]}
        args.base_scale = args.base_scale if "--base-scale" in given else 0.02
        args.sizes = args.sizes if "--sizes" in given else "1,2"
        args.chunksizes = args.chunksizes if "--chunksizes" in given else "100000,whole"
    size_list = [int(x) for x in args.sizes.split(",")]
    args.workers = [int(x) for x in args.workers.split(",")]
    args.sweep_size = args.sweep_size or max(size_list)
    chunksizes = [_chunksize(x) for x in args.chunksizes.split(",") if x]

    started, load_before, start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_average(), time.perf_counter()
    sizes: dict[int, dict[str, Any]] = {}
    for k in size_list:
        files, generated = dataset(args.data_dir, lumi=k * args.base_lumi, scale=args.base_scale, seed=args.seed)
        bytes6, _ = branch_bytes(files, DiphotonProcessor.columns)
        bytes_all, _ = branch_bytes(files, ALL_BRANCHES)
        truth = json.loads((Path(files[0]).parent / "truth.json").read_text())
        sizes[k] = {"lumi": k * args.base_lumi, "files": files, "events": truth["events_written"], "bytes6": bytes6,
                    "bytes_all": bytes_all, "disk": sum(os.path.getsize(f) for f in files)}
        note = f"generated in {generated:.0f} s" if generated is not None else "cached"
        print(f"{k}x: {len(files)} files, {truth['events_written']:,} events, {note}", flush=True)

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
            print(_row(runs[-1], bare=None, tutorial=None), flush=True)

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
        print(_row(sweeps[-1], bare=None, tutorial=None), flush=True)
    sweeps.append(engine(info["files"], size=args.sweep_size, workers=1, chunksize=DEFAULT_CHUNKSIZE, repeat=args.repeat,
                         all_branches=True, bytes_read=info["bytes_all"]))
    print(_row(sweeps[-1], bare=None, tutorial=None), flush=True)
    # Task size: several chunks per task cost the scheduler less, which two workers on two cores feel most.
    task_sweeps: list[Measurement] = []
    for workers in args.workers:
        for task_chunks in [int(x) for x in args.task_chunks.split(",") if x]:
            previous = turns_engine(workers)
            if task_chunks == TASK_CHUNKS and previous:
                task_sweeps.append(previous)
            else:
                task_sweeps.append(engine(info["files"], size=args.sweep_size, workers=workers, chunksize=DEFAULT_CHUNKSIZE,
                                          repeat=args.repeat, all_branches=False, bytes_read=info["bytes6"],
                                          task_chunks=task_chunks))
            print(_row(task_sweeps[-1], bare=None, tutorial=None), flush=True)

    lines = report(args, sizes, runs, sweeps, task_sweeps, started, load_before, load_average(), time.perf_counter() - start)
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps([m._asdict() | {"rate": m.rate} for m in runs + sweeps + task_sweeps], indent=1) + "\n")
    if not args.no_write:
        replace_section(SECTION, lines)


if __name__ == "__main__":
    main()
