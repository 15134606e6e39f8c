"""Generator throughput and the choice of basket compression.

    .venv/bin/python benchmarks/bench_generate.py [--events 1000000] [--codec-events 300000] [--out DIR] [--json FILE]

Measures:

* generation: ``generate_dataset`` over the 16 periods with 1 and 2 worker processes (events/s, MB written);
* compression: one period's file written with each codec (write time, size), then read back with uproot,
  all 80 branches and the six photon branches the analysis reads (best of two reads; the page cache is warm).

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {events, codec_events},
``generation`` [{workers, seconds, events, mb}] and ``codecs`` [{codec, write_s, mb, read_all_s, read_photons_s}];
``benchmarks/render.py`` makes the "## Generation" section of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import uproot

from _lib import output

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
    output.add_arguments(parser)
    args = parser.parse_args()
    document = output.start("generate", output.command("bench_generate.py", args, "events", "codec_events"),
                            {"events": args.events, "codec_events": args.codec_events})

    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        scratch = Path(scratch)
        generate_dataset(scratch / "warm", events=1_000, periods=["data15_periodD"])  # imports, cached efficiencies
        document["generation"] = []
        for workers in (1, 2):
            start = time.perf_counter()
            dataset = generate_dataset(scratch / f"w{workers}", events=args.events, workers=workers)
            seconds = time.perf_counter() - start
            document["generation"].append({"workers": workers, "seconds": seconds, "events": dataset.events_written,
                                           "mb": _size_mb(dataset.files)})
            print(f"generation, {workers} worker(s): {seconds:.1f} s", file=sys.stderr, flush=True)

        document["codecs"] = []
        for name, codec in CODECS.items():
            start = time.perf_counter()
            dataset = generate_dataset(
                scratch / name, events=args.codec_events, periods=["data16_periodL"], compression=codec, workers=1
            )
            seconds = time.perf_counter() - start
            path = dataset.files[0]
            document["codecs"].append({"codec": name, "write_s": seconds, "mb": _size_mb([path]),
                                       "read_all_s": _best_read(path, None),
                                       "read_photons_s": _best_read(path, list(ANALYSIS_BRANCHES))})
            print(f"{name}: written in {seconds:.1f} s", file=sys.stderr, flush=True)
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
