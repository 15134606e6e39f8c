"""JSON document -> BENCHMARKS.md section: one renderer per benchmark, and the replacement of sections in the file.

Pure formatting and summary statistics (best, median, ratios) of what the document holds: no measurement, no
import of the project, so that any document can be rendered again anywhere. A renderer returns the section's
heading and lines; :func:`replace_sections` puts sections into BENCHMARKS.md's text, each in place of the section
of the same heading (or at the end), and leaves every other section as it is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any, NamedTuple

MiB = 2**20
#: A chunk size no file reaches: one chunk per file.
WHOLE_FILE = 10**12

Document = dict[str, Any]


def machine_line(machine: dict[str, Any], load: list[float] | None = None) -> str:
    """``2 cores (AMD EPYC), 23.5 GiB memory, load average 1.58 1.34 1.32`` (``load``: other than the document's)."""
    load = machine["load_average"] if load is None else load
    return (f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']:.1f} GiB memory, load average "
            f"{' '.join(f'{x:.2f}' for x in load)}")


def _loads(load: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _listed(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def chunk_label(chunksize: int) -> str:
    """``500k``, ``1M``, ``whole file``."""
    if chunksize >= WHOLE_FILE:
        return "whole file"
    return f"{chunksize // 1000}k" if chunksize < 1_000_000 else f"{chunksize / 1e6:g}M"


# --- processing ----------------------------------------------------------------------------------------

BARE = "bare uproot read (6 branches)"
BARE_MMAP = "bare uproot read, memory-mapped"
#: The bare read with uproot's default inflater; only measured where baskets are ZLIB.
BARE_ZLIB = "bare uproot read, Python's zlib (uproot's default)"
TUTORIAL = "tutorial loop (iterate + awkward + vector)"
FUSED = "tutorial's cuts, fused, 1 M-entry steps"
EAGER = "processor, no Dask"
RUNNER = "coffea Runner, BaseSchema, 500k chunks"
BARE2 = "bare uproot read, 2 processes at once"
DASK1 = "processor, Dask 1 worker"
DASK2 = "processor, Dask 2 workers"


class Rates(NamedTuple):
    """A reader's runs: best events per wall and per CPU second, median of the latter, median paired ratio to the
    bare read, and the events per wall second of every run (turn by turn)."""

    wall: float
    cpu: float
    cpu_median: float
    vs_bare: float
    walls: tuple[float, ...]


def reader_rates(runs: list[dict[str, Any]]) -> Rates:
    """:class:`Rates` of a reader's runs, each ``{events, wall_s, cpu_s, baseline: [before, after]}`` (the bare
    read's events per CPU second just before and just after the run; the run's ratio is to their geometric mean)."""
    samples = [(r["events"] / r["wall_s"], r["events"] / r["cpu_s"],
                r["events"] / r["cpu_s"] / math.sqrt(r["baseline"][0] * r["baseline"][1])) for r in runs]
    return Rates(max(s[0] for s in samples), max(s[1] for s in samples), statistics.median(s[1] for s in samples),
                 statistics.median(s[2] for s in samples), tuple(s[0] for s in samples))


def _per_turn(one: Rates, other: Rates, runs: int) -> list[float]:
    """Wall-clock speed of ``other`` over ``one`` in each turn (medians of the turn's runs)."""
    def turns(rates: Rates) -> list[float]:
        return [statistics.median(rates.walls[k:k + runs]) for k in range(0, len(rates.walls), runs)]
    return [b / a for a, b in zip(turns(one), turns(other))]


def _processing_layout(layout: dict[str, Any], per_task: float, idle: float, runs: int) -> list[str]:
    """The table and the checks of one file layout."""
    rates = {reader["name"]: reader_rates(reader["runs"]) for reader in layout["readers"]}
    events, files, tasks, name = layout["events"], layout["files"], layout["dask_tasks"], layout["layout"]
    tutorial = rates[TUTORIAL].vs_bare
    eager, one, two = rates[EAGER], rates[DASK1], rates[DASK2]
    rows = [
        f"| {reader} | {r.wall / 1e6:.2f} | {r.cpu / 1e6:.2f} | {r.cpu_median / 1e6:.2f} | {r.vs_bare:.2f} | "
        f"{r.vs_bare / tutorial:.2f} |"
        for reader, r in rates.items()
    ]
    bare, bare2 = rates[BARE], rates[BARE2]
    scaling, ceiling = _per_turn(one, two, runs), _per_turn(bare, bare2, runs)
    dask_fixed = tasks * per_task / 1e3 + idle / 100 * events / one.wall
    gap = events / one.cpu_median - events / eager.cpu_median
    what = (f"{files} files as the release splits 2015-16 into periods, about {events / files / 1e3:.0f}k events "
            "each on average" if name.startswith("release") else "one file, as in the issue")
    what += ", ZLIB(1) like ROOT's default and the issue's file" if name.endswith("-zlib") else ", LZ4 (the generator's default)"
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
        f"({_listed(scaling)}; best runs {two.wall / one.wall:.2f}). Two bare reads at once, on "
        f"this machine: {bare2.vs_bare:.2f} per core of one, and {statistics.median(ceiling):.2f} x its wall-clock "
        f"speed ({_listed(ceiling)}); two workers per core / two bare reads per core: "
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


PROCESSING_NOTES = [
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


def processing(doc: Document) -> list[str]:
    settings, overhead = doc["settings"], doc["dask_overhead"]
    per_task, idle = overhead["cpu_ms_per_task"], overhead["idle_percent_of_core"]
    lines = [
        f"`{doc['command']}` on {machine_line(doc['machine'])}; started {doc['started']}, {settings['repeat']} turns x "
        f"{settings['runs']} runs of each reader.",
        "",
        f"Every run sits between two runs of the bare read in a process of its own (no cluster in it); the ratios are"
        f" the medians over the {settings['repeat'] * settings['runs']} runs of each reader of its events per CPU second"
        f" over the geometric mean of those two. Dask's own cost, measured in the same run on a 1-worker cluster:"
        f" {per_task:.1f} ms of CPU per no-op task (client, scheduler and worker), and {idle:.1f} % of a core while the"
        " cluster idles.",
        "",
    ]
    for layout in doc["layouts"]:
        lines += _processing_layout(layout, per_task, idle, settings["runs"])
    return lines + PROCESSING_NOTES


# --- scaling -------------------------------------------------------------------------------------------


class Measurement(NamedTuple):
    """One reader's timed passes over a file set (at ``size`` x the base), a record of the scaling document."""

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


def _paired(one: Measurement, other: Measurement) -> list[float]:
    """Speed of ``other`` over ``one`` in each turn (same events: the ratio of the walls)."""
    return [a / b for a, b in zip(one.walls, other.walls)]


def scaling_row(m: Measurement, *, bare: Measurement | None = None, tutorial: Measurement | None = None) -> str:
    """One row of the scaling tables (ratios to ``bare`` and ``tutorial`` where given)."""
    spread = f" ({min(m.walls):.1f}-{max(m.walls):.1f})" if len(m.walls) > 1 else ""
    versus = [f"{m.per_core / ref.per_core:.2f}" if ref else "" for ref in (bare, tutorial)]
    return (
        f"| {m.size}x | {m.events / 1e6:.2f} | {m.label} | {m.workers} | {f'{m.chunks} / {m.tasks}' if m.chunks else ''} | {m.wall:.1f}{spread} | "
        f"{m.rate / 1e6:.3f} | {m.per_core / 1e6:.3f} | {versus[0]} | {versus[1]} | {m.peak_rss / MiB:.0f} | {f'{m.peak_anon / MiB:.0f}' if m.peak_anon else ''} | "
        f"{m.idle_rss / MiB:.0f} | {m.bytes_read / MiB:.0f} | {m.bytes_read / MiB / m.wall:.0f} |"
    )


SCALING_HEADER = [
    "| size | M events | reader | cores | chunks / tasks | wall s | M ev/s | M ev/s/core | /core vs bare | /core vs tutorial "
    "| peak RSS/process MiB | of it anonymous MiB | idle worker MiB | MiB read | MiB/s |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def scaling(doc: Document) -> list[str]:
    settings, engine, run2 = doc["settings"], doc["engine"], doc["run2"]
    runs, sweeps, task_sweeps = ([Measurement(**{**r, "walls": tuple(r["walls"])}) for r in doc[key]]
                                 for key in ("runs", "sweeps", "task_sweeps"))
    sizes = {info["size"]: info for info in doc["sizes"]}
    workers_list, sweep_size = settings["workers"], settings["sweep_size"]
    default_chunk, task_chunks, open_entries = engine["default_chunksize"], engine["task_chunks"], engine["file_open_entries"]

    def find(label: str, size: int, workers: int = 1) -> Measurement | None:
        return next((m for m in runs if m.label == label and m.size == size and m.workers == workers), None)

    def row(m: Measurement) -> str:
        return scaling_row(m, bare=find("bare uproot read (6 branches)", m.size), tutorial=find("tutorial loop", m.size))

    lines = [
        f"`{doc['command']}`",
        "",
        f"Machine: {machine_line(doc['machine'], doc['load_average_after'])}. Started {doc['started']}, took "
        f"{doc['seconds'] / 60:.1f} min; load average (1/5/15 min) {_loads(doc['machine']['load_average'])} before, "
        f"{_loads(doc['load_average_after'])} after. Wall times are the best of {settings['repeat']} run(s), the range in "
        "brackets; at each size every reader runs once per turn, and ratios of 1 and 2 workers are taken within a turn.",
        "",
        f"Data sets (generated, {settings['seed']} seed; the full Run-2 GamGam skim would be {run2['lumi_fb']:g} fb^-1 x 1 = "
        f"{run2['lumi_fb'] * run2['events_per_fb'] / 1e6:.1f} M events):",
        "",
        "| size | lumi fb^-1 x scale | files | M events | MiB on disk | MiB of the 6 branches | MiB of all 80 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, info in sizes.items():
        lines.append(
            f"| {k}x | {info['lumi_fb']:g} x {settings['base_scale']:g} | {info['files']} | {info['events'] / 1e6:.2f} | "
            f"{info['disk_bytes'] / MiB:.0f} | {info['branch_bytes_6'] / MiB:.0f} | {info['branch_bytes_all'] / MiB:.0f} |"
        )
    lines += ["", f"Throughput and memory (engine at its default chunk size, {chunk_label(default_chunk)}):", "",
              *SCALING_HEADER, *(row(m) for m in runs)]

    small, large = min(sizes), max(sizes)
    checks = []
    for workers in workers_list:
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
    if 1 in workers_list and 2 in workers_list:
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
        lines += ["", f"Sweeps on the {sweep_size}x set, 1 worker:", "", *SCALING_HEADER, *(row(m) for m in sweeps)]
        chunk_runs = [m for m in sweeps if "all 80" not in m.label]
        best = max(chunk_runs, key=lambda m: m.rate)
        default = next((m for m in chunk_runs if m.label == "engine"), None)
        if default:
            lines += ["", f"Fastest chunk size: {best.label} at {best.rate / 1e6:.3f} M ev/s, "
                          f"{best.rate / default.rate:.2f} x the default ({chunk_label(default_chunk)}), "
                          f"peak RSS {best.peak_rss / MiB:.0f} vs {default.peak_rss / MiB:.0f} MiB."]
    if task_sweeps:
        lines += ["", f"Task size on the {sweep_size}x set, chunks of {chunk_label(default_chunk)} (the engine's default "
                      f"task is {task_chunks} chunks' worth; one chunk per task was the engine before):", "",
                  *SCALING_HEADER, *(row(m) for m in task_sweeps)]
        for workers in workers_list:
            mine = [m for m in task_sweeps if m.workers == workers]
            default = next((m for m in mine if m.label == "engine"), None)
            if default:
                lines += ["", f"{workers} worker(s), best walls: default {default.wall:.2f} s; " + "; ".join(
                    f"{m.label.removeprefix('engine, ')} {m.wall:.2f} s ({m.wall / default.wall:.2f} x)"
                    for m in mine if m is not default)]

    one, model = find("engine", large, 1), doc.get("extrapolation")
    if one and model:
        cores = model["cores"]
        lines += ["", f"Extrapolation (a model, not a measurement) of the GamGam skim at {run2['lumi_fb']:g} fb^-1 on "
                      f"{cores} cores, each at the {one.per_core / 1e6:.3f} M ev/s per core measured above at {large}x:",
                  "", "| chunk size | events | chunks | tasks | cores busy | wall s |", "|---|---|---|---|---|---|"]
        for point in model["rows"]:
            lines.append(f"| {chunk_label(point['chunksize'])} | {point['events'] / 1e6:.1f} M | {point['chunks']} | "
                         f"{point['tasks']} | {min(point['tasks'], cores)} | {point['wall_s']:.2f} |")
        per_event = one.bytes_read / one.events
        lines += [
            "",
            "Assumptions of the model: every core runs at the per-core rate measured here on local files already in the "
            "page cache; the files are laid out as generated (16 period files sharing the luminosity like 2015-16, "
            f"50k-entry clusters); the engine's chunk plan (16 files on {cores} cores: each file started in as many parts as "
            "it has room for and cut into a multiple of them, a part's chunks grouped into tasks of about "
            f"{task_chunks} chunk sizes), tasks handed longest first to the next free core; a core "
            f"opens a file the first time it reads from it, at the engine's estimate of that cost "
            f"({open_entries // 1000}k entries' work, {open_entries / one.per_core * 1e3:.0f} ms at this rate); "
            "no cost for starting workers, scheduling or merging. Reading over the network (EOS via XRootD) is "
            f"not measured: at {per_event:.0f} compressed bytes per event for the six branches, {cores} cores at this rate "
            f"need {cores * one.per_core * per_event / MiB:.0f} MiB/s from storage, and a slower link bounds the wall "
            "time instead.",
        ]
    return lines


# --- mass scan -----------------------------------------------------------------------------------------


def mass_scan(doc: Document) -> list[str]:
    scans = doc["scans"]
    walls = [statistics.median(scan["walls_s"]) for scan in scans]
    reference = walls[0] / scans[0]["points"]
    lines = [
        f"Command: `{doc['command']}`; machine: {machine_line(doc['machine'])}; {doc['settings']['workers']}-worker "
        f"LocalCluster (one thread each) already running; input: {doc['input']}.",
        "",
        "| scan | points | wall (s, median) | per point (ms) | speed-up per point vs tutorial | failed | "
        "max local Z at m (GeV) | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for scan, wall in zip(scans, walls):
        per_point = wall / scan["points"]
        target = scan.get("target_s")
        target_text = "-" if target is None else f"<= {target:g} s: {'met' if wall <= target else 'MISSED'}"
        peak = "-" if scan["max_significance"] is None else f"{scan['max_significance']:.2f} at {scan['at_mass']:g}"
        lines.append(f"| {scan['label']} | {scan['points']} | {wall:.3f} | {1e3 * per_point:.2f} | "
                     f"{reference / per_point:.0f}x | {scan['failed']} | {peak} | {target_text} |")
    return lines


# --- published likelihoods -----------------------------------------------------------------------------

PATCHSET_NOTES = [
    "How: every patch is padded to one shared structure (zero-yield samples, neutral modifiers; checked per",
    "patch), its likelihood is built as a compact jax model (`stats/compact/model.py`: the histosys sums as",
    "matrix products, the normsys factors as precomputed code-4 polynomials; no pyhf model per patch; checked",
    "against pyhf's per structure) and the five hypotest fits run as jax programs compiled once per worker",
    "(`stats/compact/minimise.py`: exact Hessian at the start, BFGS updates, active-set bounds), each verified",
    "(`stats/compact/hypotest.py`: restarts from the other fits' minima and from the lowest point, the EDM from",
    "the exact Hessian). The CLs arithmetic is pyhf's. The first patch of each worker pays the compilation.",
]


def patchset(doc: Document) -> list[str]:
    workers, n, serial = doc["settings"]["workers"], doc["patches"], doc["serial_s"]
    per_patch_serial = sum(serial) / len(serial)
    lines = [
        f"`{doc['command']}`: {n} 1Lbb patches from the tarball to the written results on a running {workers}-worker"
        f" LocalCluster, beside pyhf's numpy `hypotest` serially on {len(serial)} patch(es); started {doc['started']} on"
        f" {machine_line(doc['machine'])}.",
        "",
        "| what | patches | wall [s] | per patch [s] | ratio |",
        "|---|---|---|---|---|",
        f"| pyhf numpy hypotest, serial | {len(serial)} | {sum(serial):.1f} | {per_patch_serial:.2f} | 1 |",
        f"| pyhf numpy serial, extrapolated | {n} | {per_patch_serial * n:.0f} | {per_patch_serial:.2f} | 1 |",
    ]
    for scan in doc["scans"]:
        wall = scan["wall_s"]
        code = scan.get("code", "today")
        what = "scan-patchset" if code == "today" else f"scan-patchset at {code} (baseline)"
        lines.append(f"| {what}, compact jax engine, {workers} workers, {scan['label']} | {n} | {wall:.1f} | "
                     f"{wall / n:.2f} | {per_patch_serial * n / wall:.1f}x |")
    today = [scan for scan in doc["scans"] if scan.get("code", "today") == "today"]
    ok = min(n - scan["failed"] for scan in today)
    cold, target, worst = today[0]["wall_s"], doc["target_s"], doc["worst_deviation"]
    lines += [
        "",
        f"{ok}/{n} ok in each run of today's code; worst deviation from the reference "
        f"{'none' if worst is None else f'{worst:.2e}'} of the tolerance max(1e-4, 1e-3 rel)"
        f" where the verified fits agree with pyhf's default fit; a lower minimum than pyhf's at"
        f" {', '.join(doc['lower_minimum']) or 'none'} (there the reference, pyhf's default fit, is not the minimum)."
        f" Target (issue 4): {n} patches <= {target:g} s on 2 workers (aim 30 s): {cold:.1f} s with an empty compile"
        f" cache ({'met' if cold <= target else 'NOT met'}).",
    ]
    baseline = doc["settings"].get("baseline")
    if baseline:
        ratios = []
        for label in dict.fromkeys(scan["label"] for scan in doc["scans"]):
            walls = {scan.get("code", "today"): scan["wall_s"] for scan in doc["scans"] if scan["label"] == label}
            ratios.append(f"{walls['today'] / walls[baseline]:.2f}x with an {label}" if label.startswith("empty")
                          else f"{walls['today'] / walls[baseline]:.2f}x with a {label}")
        worst_ratio = max(today_s["wall_s"] / base["wall_s"] for today_s, base in zip(
            today, [scan for scan in doc["scans"] if scan.get("code") == baseline]))
        lines += ["", f"Today's code against {baseline}, in the same run: " + ", ".join(ratios)
                  + f". Target (issue 17): within 1.3x ({'met' if worst_ratio <= 1.3 else 'NOT met'})."]
    lines += [
        "",
        *PATCHSET_NOTES,
    ]
    return lines


# --- streaming -----------------------------------------------------------------------------------------


def streaming(doc: Document) -> list[str]:
    settings, inputs = doc["settings"], doc["inputs"]
    best = {source["name"]: min((run["seconds"], run["events"]) for run in source["runs"]) for source in inputs}
    local_seconds, local_events = best[inputs[0]["name"]]
    local_rate = local_events / local_seconds
    compressed = doc["compressed_bytes"]
    rows = [
        f"| {name} | {events:,} | {seconds:.2f} | {events / seconds / 1e6:.2f} | {compressed / seconds / 1e6:.1f} "
        f"| {events / seconds / local_rate:.2f} |"
        for name, (seconds, events) in best.items()
    ]
    every = "; ".join(f"{source['name']} " + ", ".join(f"{run['seconds']:.2f}" for run in source["runs"])
                      for source in inputs)
    return [
        f"`{doc['command']}` on {machine_line(doc['machine'], doc['load_average_after'])}; {doc['files']} generated files, "
        f"{compressed / 1e6:.1f} MB compressed in the {doc['branches']} branches read, best of {settings['rounds']} "
        f"alternating runs each on a Dask cluster of 1 worker process (all runs, s: {every}), measured "
        f"{doc['finished']}; 1-minute load average {doc['machine']['load_average'][0]:.1f} before, "
        f"{doc['load_average_after'][0]:.1f} after.",
        "",
        "| input | events | seconds | M events/s | MB/s (compressed) | / local |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


# --- streaming over slow links ------------------------------------------------------------------------

#: Latency each way (ms) -> the least events/s per worker, as a share of the same protocol at 0 ms, aimed at.
SLOW_LINK_GOALS = {10: 0.8, 50: 0.6}
#: What bounds a run over a slow link (the structure of the reads, not a measurement).
SLOW_LINK_NOTES = [
    "A file costs round trips one after the other before its first event (the XRootD or https open, then uproot's "
    "reads of the header and keys, the streamers and the TTree: 3 requests over https, 1 over root://, whose first "
    "read fetches 64 KiB, processors.chunks.ROOT_BEGIN_CHUNK) and one more per chunk read; a task reads its chunks in "
    "turn. With one thread per worker every round trip adds to the run. More threads "
    "keep more reads in flight (tasks of different files overlap), but not a file's own chain of round trips: a run "
    "whose work takes about a second at 0 ms is bounded by its largest file's chain at 50 ms; more events per file "
    "amortize it.",
]


def slow_link(doc: Document) -> list[str]:
    settings, inputs = doc["settings"], doc["inputs"]
    workers = doc["workers"]
    best = {(source["threads"], source["protocol"], source["latency_ms"]): min(source["runs"], key=lambda run: run["seconds"])
            for source in inputs}

    def rate(run: dict[str, Any]) -> float:
        return run["events"] / run["seconds"] / workers

    rows = []
    for (threads, protocol, latency), run in best.items():
        share = rate(run) / rate(best[threads, protocol, 0])
        goal = SLOW_LINK_GOALS.get(latency)
        aim = "" if goal is None else f">= {goal:.1f}: {'met' if share >= goal else 'not met'}"
        rows.append(f"| {threads} | {protocol}:// | {latency} | {run['events']:,} | {run['seconds']:.2f} | {rate(run) / 1e3:.0f} "
                    f"| {share:.2f} | {aim} | {run['bytes_down'] / 1e6:.1f} |")
    every = "; ".join(f"{source['threads']} thread(s) {source['protocol']} {source['latency_ms']} ms "
                      + _listed([r["seconds"] for r in source["runs"]]) for source in inputs)
    return [
        f"`{doc['command']}` on {machine_line(doc['machine'], doc['load_average_after'])}; {doc['files']} generated "
        f"files read through a delay proxy on 127.0.0.1 (each byte held the given time in each direction, throughput "
        f"not limited) from a local xrootd, by a Dask cluster of {workers} worker process (each number of threads in "
        f"turn: a thread per task, so more reads in flight), chunks of {chunk_label(settings['chunksize'])} entries; best of {settings['rounds']} rounds, the "
        f"latencies taking turns in each (all runs, s: {every}); measured {doc['finished']}, 1-minute load average "
        f"{doc['machine']['load_average'][0]:.1f} before, {doc['load_average_after'][0]:.1f} after. The ratio to "
        "the same threads and protocol at 0 ms is what counts: the machine is shared, so absolute rates vary between runs.",
        "",
        "| worker threads | protocol | latency each way (ms) | events | seconds | k events/s per worker | / 0 ms | goal "
        "| MB through the proxy |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *SLOW_LINK_NOTES,
    ]


# --- worker garbage collection -------------------------------------------------------------------------


def worker_gc(doc: Document) -> list[str]:
    settings = doc["settings"]
    lines = [
        f"`{doc['command']}` on {machine_line(doc['machine'])}; started {doc['started']}. {doc['files']} files "
        f"(bench_processing's release layout); per setting and worker count {settings['turns']} fresh clusters x "
        f"{settings['runs']} runs, the settings taking turns.",
        "",
        "| workers' GC | workers | GC s per run (median) | GC s per run (mean) | GC s (largest) | wall s (median)"
        " | CPU s (median) | 2 workers / 1 (median walls) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in doc["gc_settings"]:
        name = setting["name"]
        runs = {w: [r for r in doc["runs"] if r["setting"] == name and r["workers"] == w] for w in (1, 2)}
        walls = {w: statistics.median(r["wall_s"] for r in runs[w]) for w in (1, 2)}
        for workers in (1, 2):
            gcs = [r["gc_s"] for r in runs[workers]]
            speedup = f"{walls[1] / walls[2]:.2f}" if workers == 2 else ""
            lines.append(
                f"| {name} | {workers} | {statistics.median(gcs):.3f} | {statistics.mean(gcs):.3f} | {max(gcs):.3f} |"
                f" {walls[workers]:.3f} | {statistics.median(r['cpu_s'] for r in runs[workers]):.3f} | {speedup} |")
    return lines + [
        "",
        "GC seconds are summed over the workers. Each opened file leaves a few thousand objects in reference cycles"
        " (uproot's branch descriptions) that only the collector frees; with Python's settings a full collection also"
        " walks the ~200k objects of Dask, uproot and awkward alive in every worker.",
    ]


# --- generation ----------------------------------------------------------------------------------------


def generation(doc: Document) -> list[str]:
    settings = doc["settings"]
    lines = [
        f"`{doc['command']}` on {machine_line(doc['machine'])}; started {doc['started']}. Generation of "
        f"{settings['events']:,} continuum events over the 16 periods:",
        "",
        "| workers | seconds | events/s | MB written |",
        "|---|---|---|---|",
        *(f"| {run['workers']} | {run['seconds']:.1f} | {run['events'] / run['seconds']:,.0f} | {run['mb']:.1f} |"
          for run in doc["generation"]),
        "",
        f"One period's file of {settings['codec_events']:,} events written with each basket compression (one process),"
        " then read back with uproot (best of two reads, page cache warm): all branches, and the six photon branches"
        " the analysis reads.",
        "",
        "| codec | write s | MB | read all s | read photons s |",
        "|---|---|---|---|---|",
        *(f"| {c['codec']} | {c['write_s']:.1f} | {c['mb']:.1f} | {c['read_all_s']:.2f} | {c['read_photons_s']:.2f} |"
          for c in doc["codecs"]),
    ]
    return lines


# --- look-elsewhere toys -------------------------------------------------------------------------------


def lee(doc: Document) -> list[str]:
    settings, masses, base, last = doc["settings"], doc["masses"], doc["baseline"], doc["last_run"]
    target = doc["target_s"]
    return [
        f"`{doc['command']}` on {machine_line(doc['machine'])}; started {doc['started']}. Input: {doc['input']}; "
        f"{doc['cluster']}; {masses['count']} masses from {masses['low']:g} to {masses['high']:g} GeV, polynomial of "
        f"degree {doc['degree']}, toys in batches of {doc['batch_size']}, {settings['repeats']} repeats.",
        "",
        "| what | toys | wall s | per toy ms | target |",
        "|---|---|---|---|---|",
        f"| `stats.lee.global_significance` on the cluster (median of {len(doc['wall_s'])}) | {doc['toys']} | "
        f"{doc['wall_median_s']:.1f} | {doc['per_toy_ms']:.1f} | <= {target:g} s: {'met' if doc['target_met'] else 'NOT met'} |",
        f"| baseline: {base['method']}, {base['toys_timed']} toys timed, extrapolated to {settings['workers']} workers | "
        f"{doc['toys']} | {base['extrapolated_s']:.1f} | {1e3 * base['per_toy_s']:.1f} | |",
        "",
        f"{doc['speedup_vs_baseline']:.0f}x the baseline; the fast statistic costs {1e3 * base['fast_per_toy_s']:.2f} ms "
        f"per toy serially, and its q0 differs from the full method's by at most {base['max_abs_q0_diff_fast_vs_full']:.2g}"
        f" on the timed toys. Failed toys per run: {', '.join(str(n) for n in doc['failed_toys'])}. Last run: local Z "
        f"{last['z_local']:.2f} at {last['mass']:g} GeV; {last['toys']}.",
    ]


def mass_limits(doc: Document) -> list[str]:
    settings, base, target = doc["settings"], doc["baseline"], doc["target_s"]
    lines = [
        f"`{doc['command']}` on {machine_line(doc['machine'])}; started {doc['started']}. Input: {doc['input']}; "
        f"{doc['patches']} masses from 110 to 160 GeV, one patch each; LocalCluster of {settings['workers']} workers, "
        "started before timing.",
        "",
        "| what | masses | wall s | hypotests | failed | target |",
        "|---|---|---|---|---|---|",
    ]
    for index, scan in enumerate(doc["scans"]):
        verdict = f"<= {target:g} s: {'met' if doc['target_met'] else 'NOT met'}" if index == 0 else ""
        lines.append(f"| `stats.limit_scan.scan_limits`, {scan['label']} | {doc['patches']} | {scan['wall_s']:.1f} | "
                     f"{scan['hypotests']} | {scan['failed']} | {verdict} |")
    if base:
        lines += [f"| baseline: {base['method']}, {len(base['masses'])} masses timed, extrapolated to "
                  f"{settings['workers']} workers | {doc['patches']} | {base['extrapolated_s']:.1f} | | | |", "",
                  f"The baseline takes {base['per_mass_s']:.1f} s per mass (at "
                  f"{', '.join(f'{m:g}' for m in base['masses'])} GeV); there the six limits differ from the scan's by "
                  f"at most {base['max_relative_difference']:.2g} (relative)"
                  + ("." if base.get("verified_cls_deviation") is None else
                     f"; at the scan's observed limits pyhf's model with verified fits gives CLs within "
                     f"{base['verified_cls_deviation']:.1g} of 0.05, so a larger difference is pyhf's default fit "
                     "stopping early.")]
    return lines


def patch_limits(doc: Document) -> list[str]:
    settings, rows, dask = doc["settings"], doc["rows"], doc.get("dask")
    lines = [f"`{doc['command']}` on {machine_line(doc['machine'])}; started {doc['started']}. Both serially in one "
             "process, patch by patch: `stats.limits.upper_limits` through one compact `PatchEngine` (the first patch "
             f"pays the compilation) and pyhf's `upper_limit` ({settings['pyhf_backend']} backend) on the first "
             f"{settings['pyhf']}.", "",
             "| patch | compact wall s | CPU s | hypotests | pyhf wall s | hypotests | largest relative difference |",
             "|---|---|---|---|---|---|---|"]

    def cell(row: dict, side: str, key: str, spec: str) -> str:
        value = row.get(side, {}).get(key)
        return "" if value is None else format(value, spec)

    for row in rows:
        difference = row.get("largest_relative_difference")
        lines.append(f"| {row['name']} | {cell(row, 'compact', 'wall', '.1f')} | {cell(row, 'compact', 'cpu', '.1f')} | "
                     f"{cell(row, 'compact', 'hypotests', 'd')} | {cell(row, 'pyhf', 'wall', '.1f')} | "
                     f"{cell(row, 'pyhf', 'hypotests', 'd')} | {'' if difference is None else f'{difference:.2g}'} |")
    walls = [row["pyhf"]["wall"] for row in rows if "wall" in row.get("pyhf", {})]
    failures = [f"{row['name']} ({row['pyhf']['error']})" for row in rows if "error" in row.get("pyhf", {})]
    if failures:
        lines += ["", "pyhf's `upper_limit` failed on " + "; ".join(failures) + "."]
    if dask and walls:
        per_patch = sum(walls) / len(walls)
        extrapolated = per_patch * 125 / dask["workers"]
        lines += ["", f"Baseline: pyhf's `upper_limit` patch by patch ({settings['pyhf_backend']}), {per_patch:.1f} s per "
                  f"patch on the {len(walls)} it finished, so {extrapolated:.0f} s for all 125 on {dask['workers']} "
                  f"workers (extrapolated): the scan below is {extrapolated / dask['wall'] * dask['patches'] / 125:.1f}x "
                  "as fast."]
    if dask:
        verdict = "met" if dask["wall"] <= doc["target_s"] else "NOT met"
        lines += ["", f"`stats.limit_scan.scan_limits` of {dask['patches']} patches on {dask['workers']} workers (empty "
                  f"compilation cache, from the tarball to the written results): {dask['wall']:.1f} s, "
                  f"{dask['hypotests']} hypotests, {len(dask['failed'])} failed; target <= {doc['target_s']:g} s for "
                  f"all 125: {verdict if dask['patches'] >= 125 else 'not measured on all 125'}."]
    return lines


# --- the engine and coffea's Runner --------------------------------------------------------------------

RUNNER_READERS = {
    "engine": "engine: `process_files` on the cluster of `--workers {workers}`",
    "runner_futures_warm": "Runner, `FuturesExecutor(workers={workers})`, one pool kept warm",
    "runner_futures": "Runner, `FuturesExecutor(workers={workers})`, a new pool per call",
}


def coffea_runner(doc: Document) -> list[str]:
    settings = doc["settings"]
    workers = settings["workers"]
    lines = [
        f"`{doc['command']}` on {machine_line(doc['machine'])}; started {doc['started']}. The same files, "
        f"{workers} worker processes each, chunks of {settings['chunksize']:,} entries, {settings['uproot']}; medians "
        f"of {settings['runs']} turns (engine / Runner: the median of the turns' ratios; per CPU s counts every process"
        " involved).",
    ]
    for layout, result in doc["layouts"].items():
        medians, ratios, cold = result["medians"], result["ratios"], result["cold"]
        lines += [
            "",
            f"{layout}: {result['events']:,} events in {result['files']} files.",
            "",
            "| reader | M events / s | M events / CPU s | engine / it (wall) | engine / it (CPU) |",
            "|---|---|---|---|---|",
        ]
        for key, label in RUNNER_READERS.items():
            wall, cpu = (ratios[unit].get(f"engine_over_{key}") for unit in ("events_per_s", "events_per_cpu_s"))
            lines.append(f"| {label.format(workers=workers)} | {medians['events_per_s'][key] / 1e6:.2f} | "
                         f"{medians['events_per_cpu_s'][key] / 1e6:.2f} | {'' if wall is None else f'{wall:.2f}'} | "
                         f"{'' if cpu is None else f'{cpu:.2f}'} |")
        lines += ["", f"From a shell, in a fresh interpreter: `opendata-stats process --workers {workers}` "
                      f"{cold['opendata_stats_process_s']:.1f} s, a script running the Runner {cold['runner_script_s']:.1f} s."]
    return lines


# --- the sections --------------------------------------------------------------------------------------

#: benchmark (the document's ``benchmark``) -> (heading of its section, renderer).
RENDERERS: dict[str, tuple[str, Callable[[Document], list[str]]]] = {
    "processing": ("## Processing", processing),
    "mass_scan": ("## Mass scan", mass_scan),
    "patchset": ("## Published likelihoods", patchset),
    "streaming": ("## Streaming", streaming),
    "slow_link": ("## Streaming over slow links", slow_link),
    "scaling": ("## Scaling", scaling),
    "worker_gc": ("## Worker garbage collection", worker_gc),
    "generate": ("## Generation", generation),
    "lee": ("## Look-elsewhere toys", lee),
    "mass_limits": ("## Upper limits against the signal mass", mass_limits),
    "patch_limits": ("## Upper limits of published likelihoods", patch_limits),
    "coffea_runner": ("## The engine and coffea's Runner", coffea_runner),
}


def render(doc: Document) -> tuple[str, list[str]]:
    """(heading, lines) of the section ``doc`` renders; ValueError for a document of no known benchmark."""
    name = doc.get("benchmark") if isinstance(doc, dict) else None
    if name not in RENDERERS:
        raise ValueError(f"not a benchmark document (its 'benchmark' is {name!r}; known: {', '.join(RENDERERS)})")
    heading, renderer = RENDERERS[name]
    return heading, renderer(doc)


def replace_sections(text: str, sections: dict[str, list[str]]) -> str:
    """``text`` (BENCHMARKS.md) with the body of each ``## heading`` of ``sections`` replaced by its lines, a section
    the text lacks appended at the end; everything else, other sections included, stays as it is."""
    for heading, lines in sections.items():
        body = "\n".join(lines) + "\n"
        start = _heading_at(text, heading)
        if start < 0:
            text = text.rstrip("\n") + f"\n\n{heading}\n\n{body}"
            continue
        after = start + len(heading)
        end = text.find("\n## ", after)
        tail = text[end:] if end >= 0 else ""
        text = text[:after] + "\n\n" + body + tail
    return text


def _heading_at(text: str, heading: str) -> int:
    """Where the line ``heading`` starts in ``text`` (a whole line, not a prefix of a longer heading), or -1."""
    position = 0
    while True:
        found = text.find(heading, position)
        if found < 0:
            return -1
        line_start = found == 0 or text[found - 1] == "\n"
        end = found + len(heading)
        if line_start and (end == len(text) or text[end] == "\n"):
            return found
        position = end
