"""benchmarks/render.py and _lib.sections: small JSON documents rendered into BENCHMARKS.md sections (formatting
only: nothing here measures or times anything)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _lib import sections  # noqa: E402
from _lib.output import command  # noqa: E402

_spec = importlib.util.spec_from_file_location("benchmarks_render", BENCHMARKS / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

MACHINE = {"cores": 2, "cpu": "AMD EPYC", "memory_gib": 23.5, "load_average": [1.0, 2.0, 3.0], "system": "Linux"}


def mass_scan_document() -> dict:
    scans = [
        {"label": "tutorial (lmfit + cabinetry), 25 points, serial", "points": 25, "walls_s": [100.0], "failed": 13,
         "max_significance": 16.716, "at_mass": 125.0, "target_s": None},
        {"label": "robust, 25 points, cluster", "points": 25, "walls_s": [0.6, 0.5, 0.4], "failed": 0,
         "max_significance": 14.4, "at_mass": 125.0, "target_s": 3.0},
        {"label": "robust, 601 points, cluster", "points": 601, "walls_s": [70.0], "failed": 1,
         "max_significance": None, "at_mass": None, "target_s": 60.0},
    ]
    return {"benchmark": "mass_scan", "command": "python benchmarks/bench_mass_scan.py --workers 2",
            "started": "2026-12-05 01:00 UTC", "machine": MACHINE, "settings": {"workers": 2, "input": None},
            "input": "a seeded toy (1e5 continuum + 1800 signal events, 60 bins)", "scans": scans}


def test_mass_scan_table():
    heading, lines = sections.render(mass_scan_document())
    assert heading == "## Mass scan"
    assert lines == [
        "Command: `python benchmarks/bench_mass_scan.py --workers 2`; machine: 2 cores (AMD EPYC), 23.5 GiB memory, load"
        " average 1.00 2.00 3.00; 2-worker LocalCluster (one thread each) already running; input: a seeded toy (1e5"
        " continuum + 1800 signal events, 60 bins).",
        "",
        "| scan | points | wall (s, median) | per point (ms) | speed-up per point vs tutorial | failed | "
        "max local Z at m (GeV) | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        "| tutorial (lmfit + cabinetry), 25 points, serial | 25 | 100.000 | 4000.00 | 1x | 13 | 16.72 at 125 | - |",
        "| robust, 25 points, cluster | 25 | 0.500 | 20.00 | 200x | 0 | 14.40 at 125 | <= 3 s: met |",
        "| robust, 601 points, cluster | 601 | 70.000 | 116.47 | 34x | 1 | - | <= 60 s: MISSED |",
    ]


def test_worker_gc_table():
    runs = [
        {"setting": name, "workers": workers, "wall_s": wall, "cpu_s": 1.0, "gc_s": gc}
        for name, gc in (("tuned (default)", 0.02), ("Python's", 0.2))
        for workers, wall in ((1, 1.0), (2, 0.5))
    ]
    document = {"benchmark": "worker_gc", "command": "python benchmarks/bench_worker_gc.py --events 2000000 --turns 3"
                " --runs 6", "started": "2026-12-01 14:22 UTC", "machine": MACHINE,
                "settings": {"events": 2000000, "turns": 3, "runs": 6}, "files": 16,
                "gc_settings": [{"name": "tuned (default)", "gc_threshold": 20000}, {"name": "Python's", "gc_threshold": None}],
                "runs": runs}
    heading, lines = sections.render(document)
    assert heading == "## Worker garbage collection"
    assert lines[0].startswith("`python benchmarks/bench_worker_gc.py --events 2000000 --turns 3 --runs 6` on 2 cores "
                               "(AMD EPYC), 23.5 GiB memory, load average 1.00 2.00 3.00; started 2026-12-01 14:22 UTC. "
                               "16 files")
    assert lines[4:8] == [
        "| tuned (default) | 1 | 0.020 | 0.020 | 0.020 | 1.000 | 1.000 |  |",
        "| tuned (default) | 2 | 0.020 | 0.020 | 0.020 | 0.500 | 1.000 | 2.00 |",
        "| Python's | 1 | 0.200 | 0.200 | 0.200 | 1.000 | 1.000 |  |",
        "| Python's | 2 | 0.200 | 0.200 | 0.200 | 0.500 | 1.000 | 2.00 |",
    ]


def test_processing_rows_are_paired_ratios():
    def reader(name: str, wall: float, cpu: float) -> dict:
        return {"name": name, "runs": [{"events": 1_000_000, "wall_s": wall, "cpu_s": cpu, "baseline": [1e6, 1e6]}]}

    readers = [reader(sections.BARE, 1.0, 1.0), reader(sections.TUTORIAL, 2.0, 2.0), reader(sections.EAGER, 1.0, 1.25),
               reader(sections.BARE2, 0.5, 1.0), reader(sections.DASK1, 1.0, 1.25), reader(sections.DASK2, 0.5, 1.25)]
    document = {"benchmark": "processing", "command": "python benchmarks/bench_processing.py --events 1000000",
                "started": "2026-12-05 01:00 UTC", "machine": MACHINE, "settings": {"repeat": 1, "runs": 1},
                "dask_overhead": {"cpu_ms_per_task": 12.0, "idle_percent_of_core": 4.0},
                "layouts": [{"layout": "single", "files": 1, "events": 1_000_000, "dask_tasks": 2, "readers": readers}]}
    heading, lines = sections.render(document)
    assert heading == "## Processing"
    table = lines[lines.index("### 1,000,000 events in one file, as in the issue, LZ4 (the generator's default)") + 4:]
    assert table[:6] == [
        "| bare uproot read (6 branches) | 1.00 | 1.00 | 1.00 | 1.00 | 2.00 |",
        "| tutorial loop (iterate + awkward + vector) | 0.50 | 0.50 | 0.50 | 0.50 | 1.00 |",
        "| processor, no Dask | 1.00 | 0.80 | 0.80 | 0.80 | 1.60 |",
        "| bare uproot read, 2 processes at once | 2.00 | 1.00 | 1.00 | 1.00 | 2.00 |",
        "| processor, Dask 1 worker | 1.00 | 0.80 | 0.80 | 0.80 | 1.60 |",
        "| processor, Dask 2 workers | 2.00 | 0.80 | 0.80 | 0.80 | 1.60 |",
    ]


def test_render_replaces_only_the_sections_it_has_documents_for(tmp_path):
    before = ("# Benchmarks\n\nIntro.\n\n## Processing\n\nmeasured by hand, kept\n\n### sub\n\nkept too\n\n"
              "## Mass scan\n\nold table\n\n## Streaming\n\nalso kept\n")
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text(before)
    document = tmp_path / "mass_scan.json"
    document.write_text(json.dumps(mass_scan_document()))
    assert render.main([str(document), "--benchmarks", str(benchmarks)]) == 0
    after = benchmarks.read_text()
    _, lines = sections.render(mass_scan_document())
    assert after == before.replace("old table\n", "\n".join(lines) + "\n")
    assert render.main([str(document), "--benchmarks", str(benchmarks)]) == 0  # again: nothing changes
    assert benchmarks.read_text() == after


def test_a_section_the_file_lacks_goes_at_the_end(tmp_path):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\n## Streaming\n\nkept\n")
    document = tmp_path / "mass_scan.json"
    document.write_text(json.dumps(mass_scan_document()))
    assert render.main([str(document), "--benchmarks", str(benchmarks)]) == 0
    text = benchmarks.read_text()
    assert text.startswith("# Benchmarks\n\n## Streaming\n\nkept\n\n## Mass scan\n\nCommand: ")
    assert text.endswith("<= 60 s: MISSED |\n")


def test_not_a_document_is_one_error_line(tmp_path, capsys):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n")
    document = tmp_path / "other.json"
    document.write_text(json.dumps({"benchmark": "nothing we know"}))
    assert render.main([str(document), "--benchmarks", str(benchmarks)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {document}: ValueError: not a benchmark document")
    assert benchmarks.read_text() == "# Benchmarks\n"


def test_command_spells_out_the_options():
    args = argparse.Namespace(events=2_000_000, layouts=["release", "single"], quick=True, input=None, json="x.json")
    assert (command("bench_processing.py", args, "events", "layouts", "quick", "input")
            == "python benchmarks/bench_processing.py --events 2000000 --layouts release,single --quick")


def test_mass_limits_table():
    doc = {"benchmark": "mass_limits", "command": "python benchmarks/bench_mass_limits.py --masses 61 --workers 2",
           "started": "2026-12-05 06:00 UTC", "machine": MACHINE, "settings": {"masses": 61, "workers": 2, "baseline": 3},
           "input": "a toy", "patches": 61,
           "scans": [{"label": "fresh engines", "wall_s": 31.5, "failed": 0, "hypotests": 700},
                     {"label": "engines of the first scan", "wall_s": 20.25, "failed": 1, "hypotests": 690}],
           "baseline": {"method": "pyhf upper_limit", "masses": [110.0, 135.0, 160.0], "per_mass_s": 12.0,
                        "extrapolated_s": 366.0, "max_relative_difference": 2.5e-4, "verified_cls_deviation": 3e-9},
           "target_s": 30.0, "target_met": False}
    heading, lines = sections.render(doc)
    assert heading == "## Upper limits against the signal mass"
    assert lines[4:] == [
        "| `stats.limit_scan.scan_limits`, fresh engines | 61 | 31.5 | 700 | 0 | <= 30 s: NOT met |",
        "| `stats.limit_scan.scan_limits`, engines of the first scan | 61 | 20.2 | 690 | 1 |  |",
        "| baseline: pyhf upper_limit, 3 masses timed, extrapolated to 2 workers | 61 | 366.0 | | | |",
        "",
        "The baseline takes 12.0 s per mass (at 110, 135, 160 GeV); there the six limits differ from the "
        "scan's by at most 0.00025 (relative); at the scan's observed limits pyhf's model with verified fits gives CLs "
        "within 3e-09 of 0.05, so a larger difference is pyhf's default fit stopping early.",
    ]


def test_patch_limits_table():
    rows = [{"name": "A", "compact": {"wall": 2.5, "cpu": 2.25, "hypotests": 12},
             "pyhf": {"wall": 30.0, "cpu": 29.0, "hypotests": 40}, "largest_relative_difference": 4.8e-5},
            {"name": "B", "compact": {"wall": 1.5, "cpu": 1.5, "hypotests": 10}},
            {"name": "C", "compact": {"wall": 1.5, "cpu": 1.5, "hypotests": 10}, "pyhf": {"error": "outside its bounds"}}]
    doc = {"benchmark": "patch_limits", "command": "python benchmarks/bench_limits.py", "started": "x",
           "machine": MACHINE, "settings": {"patches": "all", "pyhf": 1, "pyhf_backend": "jax", "no_compact": False,
                                            "dask": 2},
           "rows": rows, "curves": [], "target_s": 300.0,
           "dask": {"workers": 2, "patches": 125, "wall": 250.0, "failed": [], "hypotests": 1500, "limits": {}}}
    heading, lines = sections.render(doc)
    assert heading == "## Upper limits of published likelihoods"
    assert lines[4:6] == ["| A | 2.5 | 2.2 | 12 | 30.0 | 40 | 4.8e-05 |", "| B | 1.5 | 1.5 | 10 |  |  |  |"]
    assert "pyhf's `upper_limit` failed on C (outside its bounds)." in lines
    assert lines[-1].endswith("250.0 s, 1500 hypotests, 0 failed; target <= 300 s for all 125: met.")
    assert ("Baseline: pyhf's `upper_limit` patch by patch (jax), 30.0 s per patch on the 1 it finished, so 1875 s for "
            "all 125 on 2 workers (extrapolated): the scan below is 7.5x as fast.") in lines


def test_patchset_table_with_a_baseline_revision():
    scans = [{"label": "empty compile cache", "code": "today", "wall_s": 26.0, "failed": 0},
             {"label": "empty compile cache", "code": "cce77cf", "wall_s": 20.0, "failed": 0},
             {"label": "warm compile cache", "code": "today", "wall_s": 19.5, "failed": 0},
             {"label": "warm compile cache", "code": "cce77cf", "wall_s": 16.0, "failed": 0}]
    doc = {"benchmark": "patchset", "command": "python benchmarks/bench_patchset.py --baseline cce77cf",
           "started": "x", "machine": MACHINE, "settings": {"patches": 125, "serial": 1, "workers": 2,
                                                            "baseline": "cce77cf"},
           "patches": 125, "serial_s": [10.0], "scans": scans, "worst_deviation": 0.1, "lower_minimum": ["P"],
           "target_s": 60.0}
    heading, lines = sections.render(doc)
    assert heading == "## Published likelihoods"
    assert "| scan-patchset at cce77cf (baseline), compact jax engine, 2 workers, warm compile cache | 125 | 16.0 |" \
        " 0.13 | 78.1x |" in lines
    assert ("Today's code against cce77cf, in the same run: 1.30x with an empty compile cache, 1.22x with a warm "
            "compile cache. Target (issue 17): within 1.3x (met).") in lines
    assert any(line.startswith("125/125 ok in each run of today's code") and "26.0 s with an empty" in line
               for line in lines)


def slow_link_document() -> dict:
    def runs(*seconds):
        return [{"seconds": s, "events": 1_000_000, "bytes_down": 60_000_000} for s in seconds]

    inputs = [{"threads": 1, "protocol": "root", "latency_ms": 0, "runs": runs(4.0, 5.0)},
              {"threads": 1, "protocol": "root", "latency_ms": 10, "runs": runs(6.0, 4.8)},
              {"threads": 1, "protocol": "root", "latency_ms": 50, "runs": runs(10.0)},
              {"threads": 1, "protocol": "https", "latency_ms": 0, "runs": runs(2.0)},
              {"threads": 1, "protocol": "https", "latency_ms": 50, "runs": runs(2.5)},
              {"threads": 8, "protocol": "root", "latency_ms": 0, "runs": runs(1.0)},
              {"threads": 8, "protocol": "root", "latency_ms": 50, "runs": runs(1.25)}]
    return {"benchmark": "slow_link", "command": "python benchmarks/bench_slow_link.py", "machine": MACHINE,
            "load_average_after": [1.5, 1.0, 1.0], "finished": "2026-12-05 07:30 UTC", "files": 16, "workers": 1,
            "settings": {"chunksize": 100_000, "rounds": 2}, "inputs": inputs}


def test_slow_link_table_rates_each_latency_against_its_protocol_at_zero():
    heading, lines = sections.render(slow_link_document())
    assert heading == "## Streaming over slow links"
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:3]): line for line in lines if line.startswith("| ")}
    assert len(rows) == 8  # the header and 7 measurements
    # Best runs, 1 thread: root 4.0 s at 0 ms, 4.8 s at 10 ms (0.83 >= 0.8), 10 s at 50 ms (0.40 < 0.6); https 2.0 and
    # 2.5 s. 8 threads: against their own 1.0 s at 0 ms.
    assert "| 4.80 | 208 | 0.83 | >= 0.8: met | 60.0 |" in rows["1", "root://", "10"]
    assert "| 10.00 | 100 | 0.40 | >= 0.6: not met |" in rows["1", "root://", "50"]
    assert "| 2.50 | 400 | 0.80 | >= 0.6: met |" in rows["1", "https://", "50"]
    assert "| 1.00 |  |" in rows["1", "https://", "0"]
    assert "| 1.25 | 800 | 0.80 | >= 0.6: met |" in rows["8", "root://", "50"]
    assert "1 thread(s) root 0 ms 4.00, 5.00" in lines[0] and "1 worker process" in lines[0]
