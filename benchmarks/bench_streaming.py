"""Streaming throughput: the processor reading over root:// from a local XRootD server against local reads.

    .venv/bin/python benchmarks/bench_streaming.py [--events 2000000] [--chunksize 100000] [--rounds 2] [--json FILE]

Generates (or reuses) a GamGam file set, serves its directory with a real ``xrootd`` daemon on 127.0.0.1
(:class:`deploy.xrootd.XRootDServer`) and runs ``process_files`` on local paths (the baseline) and on root://
URLs, alternating, ``--rounds`` times each, on a local Dask cluster of one worker process (start-up excluded,
worker warmed up, its tree cache cleared before each run). The files are in the page cache for both, so the
difference is the cost of the protocol (XRootD client, server, loopback), not of a disk or a network.

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {events, chunksize,
rounds}, ``files``, ``branches`` (read), ``compressed_bytes`` (of those branches in the files) and ``inputs``:
[{name, runs: [{seconds, events}]}], local files first; ``benchmarks/render.py`` makes the "## Streaming"
section of it (the best run of each input).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _lib import output
from _lib.data import branch_bytes, served_dataset
from _lib.readers import warm_worker

from deploy.clusters import dask_client
from deploy.xrootd import XRootDServer
from processors.chunks import clear_trees
from processors.engine import process_files
from processors.processor import DiphotonProcessor


def one_run(files: list[str], client, chunksize: int) -> dict[str, float]:
    """One cold ``process_files`` over ``files``: its seconds and events."""
    client.run(clear_trees)
    start = time.perf_counter()
    result = process_files(files, processor=DiphotonProcessor(), client=client, chunksize=chunksize, retries=0, progress=False)
    seconds = time.perf_counter() - start
    if result.failed_chunks:
        raise SystemExit(f"failed chunks: {result.failed_chunks[:3]}")
    return {"seconds": seconds, "events": result.events_processed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--chunksize", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/opendata-stats-bench/streaming"))
    parser.add_argument("--rounds", type=int, default=2)
    output.add_arguments(parser, "--no-write")
    args = parser.parse_args()
    document = output.start("streaming", output.command("bench_streaming.py", args, "events", "chunksize", "rounds"),
                            {"events": args.events, "chunksize": args.chunksize, "rounds": args.rounds})

    files = served_dataset(args.data, args.events)
    compressed, _ = branch_bytes(files, DiphotonProcessor.columns)  # also fills the page cache
    runs: dict[str, list[dict[str, float]]] = {"local files": [], "root:// (local xrootd)": []}
    with XRootDServer(args.data, http_port=None) as server, dask_client(workers=1) as client:
        urls = server.urls("root")
        client.run(warm_worker)
        one_run(files[:1], client, args.chunksize)  # warm up: imports, first XRootD connection
        one_run(urls[:1], client, args.chunksize)
        for _ in range(args.rounds):
            runs["local files"].append(one_run(files, client, args.chunksize))
            runs["root:// (local xrootd)"].append(one_run(urls, client, args.chunksize))
    document.update({"files": len(files), "branches": len(DiphotonProcessor.columns), "compressed_bytes": compressed,
                     "inputs": [{"name": name, "runs": done} for name, done in runs.items()]})
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
