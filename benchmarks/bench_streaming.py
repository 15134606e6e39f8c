"""Streaming throughput: the processor reading over root:// from a local XRootD server against local reads.

    .venv/bin/python benchmarks/bench_streaming.py [--events 2000000] [--chunksize 100000] [--rounds 2] [--no-write]

Generates (or reuses) a GamGam file set, serves its directory with a real ``xrootd`` daemon on 127.0.0.1
(:class:`deploy.xrootd.XRootDServer`) and runs ``process_files`` on local paths and on root:// URLs, alternating,
``--rounds`` times each, on a local Dask cluster of one worker process (start-up excluded, worker warmed up,
its tree cache cleared before each run); the table has the best run of each. The files are in the page cache for both, so the difference is the cost of the
protocol (XRootD client, server, loopback), not of a disk or a network. MB/s counts the compressed bytes of
the branches the processor reads. Prints a table and, unless ``--no-write``, replaces the "## Streaming"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import branch_bytes, machine, replace_section, warm_worker
from bench_processing import dataset as processing_dataset

from deploy.clusters import dask_client
from deploy.xrootd import XRootDServer
from processors.chunks import clear_trees
from processors.engine import process_files
from processors.processor import DiphotonProcessor

SECTION = "## Streaming"


def dataset(directory: Path, events: int) -> list[str]:
    """The processing benchmark's files (generated once, reused), readable by the daemon's user (nobody)."""
    files = processing_dataset(directory, events)
    for path in [directory, *directory.iterdir()]:  # so it serves them in place, without a staged copy
        path.chmod(0o755 if path.is_dir() else 0o644)
    return files


def one_run(files: list[str], client, chunksize: int) -> tuple[float, int]:
    client.run(clear_trees)
    start = time.perf_counter()
    result = process_files(files, processor=DiphotonProcessor(), client=client, chunksize=chunksize, retries=0, progress=False)
    seconds = time.perf_counter() - start
    if result.failed_chunks:
        raise SystemExit(f"failed chunks: {result.failed_chunks[:3]}")
    return seconds, result.events_processed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--chunksize", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/opendata-stats-bench/streaming"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    files = dataset(args.data, args.events)
    compressed, _ = branch_bytes(files, DiphotonProcessor.columns)  # also fills the page cache
    load_before = os.getloadavg()[0]
    runs: dict[str, list[tuple[float, int]]] = {"local files": [], "root:// (local xrootd)": []}
    with XRootDServer(args.data, http_port=None) as server, dask_client(workers=1) as client:
        urls = server.urls("root")
        client.run(warm_worker)
        one_run(files[:1], client, args.chunksize)  # warm up: imports, first XRootD connection
        one_run(urls[:1], client, args.chunksize)
        for _ in range(args.rounds):
            runs["local files"].append(one_run(files, client, args.chunksize))
            runs["root:// (local xrootd)"].append(one_run(urls, client, args.chunksize))
    timings = {name: min(values) for name, values in runs.items()}
    local_rate = timings["local files"][1] / timings["local files"][0]
    rows = [
        f"| {name} | {events:,} | {seconds:.2f} | {events / seconds / 1e6:.2f} | {compressed / seconds / 1e6:.1f} "
        f"| {events / seconds / local_rate:.2f} |"
        for name, (seconds, events) in timings.items()
    ]
    table = [
        f"`python benchmarks/bench_streaming.py --events {args.events} --chunksize {args.chunksize} --rounds {args.rounds}` on {machine()}; "
        f"{len(files)} generated files, {compressed / 1e6:.1f} MB compressed in the {len(DiphotonProcessor.columns)} branches read, best of {args.rounds} "
        f"alternating runs each on a Dask cluster of 1 worker process (all runs, s: "
        + "; ".join(f"{name} " + ", ".join(f"{t:.2f}" for t, _ in values) for name, values in runs.items())
        + f"), measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores shared with other "
        "engineers' test runs: rates are lower bounds, the ratio is what counts).",
        "",
        "| input | events | seconds | M events/s | MB/s (compressed) | / local |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(table))
    if not args.no_write:
        replace_section(SECTION, table)


if __name__ == "__main__":
    main()
