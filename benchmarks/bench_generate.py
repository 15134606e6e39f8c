"""Generator throughput and the choice of basket compression.

    .venv/bin/python benchmarks/bench_generate.py [--events 1000000] [--codec-events 300000] [--out DIR]

Measures, and prints as tables:

* generation: ``generate_dataset`` over the 16 periods with 1 and 2 worker processes (events/s, MB written);
* compression: one period's file written with each codec (write time, size), then read back with uproot,
  all 80 branches and the six photon branches the analysis reads (best of two reads; the page cache is warm).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import uproot

from processors.generate import generate_dataset
from processors.schema import ANALYSIS_BRANCHES, TREE_NAME

CODECS = {
    "ZLIB(1)": uproot.ZLIB(1),
    "ZLIB(4)": uproot.ZLIB(4),
    "LZMA(1)": uproot.LZMA(1),
    "LZ4(1)": uproot.LZ4(1),
    "ZSTD(1)": uproot.ZSTD(1),
    "ZSTD(5)": uproot.ZSTD(5),
}


def _size_mb(paths) -> float:
    return sum(os.path.getsize(p) for p in paths) / 1e6


def _best_read(path: Path, branches) -> float:
    times = []
    for _ in range(2):
        start = time.perf_counter()
        uproot.open(path)[TREE_NAME].arrays(branches)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="continuum events of the generation runs")
    parser.add_argument("--codec-events", type=int, default=300_000, help="events of the compression comparison")
    parser.add_argument("--out", type=Path, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        scratch = Path(scratch)
        generate_dataset(scratch / "warm", events=1_000, periods=["data15_periodD"])  # imports, cached efficiencies
        print(f"generation of {args.events:,} continuum events over 16 periods, {os.cpu_count()} cores")
        print(f"{'workers':>8} {'seconds':>8} {'events/s':>10} {'MB':>8}")
        for workers in (1, 2):
            start = time.perf_counter()
            dataset = generate_dataset(scratch / f"w{workers}", events=args.events, workers=workers)
            seconds = time.perf_counter() - start
            rate = dataset.events_written / seconds
            print(f"{workers:>8} {seconds:>8.1f} {rate:>10,.0f} {_size_mb(dataset.files):>8.1f}")

        print(f"\ncompression of one file of {args.codec_events:,} events (one process)")
        print(f"{'codec':>8} {'write s':>8} {'MB':>7} {'read all s':>11} {'read photons s':>15}")
        for name, codec in CODECS.items():
            start = time.perf_counter()
            dataset = generate_dataset(
                scratch / name, events=args.codec_events, periods=["data16_periodL"], compression=codec, workers=1
            )
            seconds = time.perf_counter() - start
            path = dataset.files[0]
            print(
                f"{name:>8} {seconds:>8.1f} {_size_mb([path]):>7.1f} {_best_read(path, None):>11.2f}"
                f" {_best_read(path, list(ANALYSIS_BRANCHES)):>15.2f}"
            )


if __name__ == "__main__":
    main()
