"""Streaming over a slow link: events per second per worker through a delay proxy at 0, 10 and 50 ms each way.

    .venv/bin/python benchmarks/bench_slow_link.py [--events 2000000] [--chunksize 500000] [--latencies 0,10,50]
        [--protocols root,https] [--threads 1,8,32] [--rounds 3] [--json FILE]

Serves a generated GamGam file set with a real ``xrootd`` daemon on 127.0.0.1 (:class:`deploy.xrootd.XRootDServer`)
and puts the delay proxy of :mod:`_lib.proxy` between it and the readers: every byte waits the given latency in each
direction (a round trip costs twice that), throughput is not limited. ``process_files`` runs over the URLs through the
proxy on a local Dask cluster of one worker process with each of ``--threads`` threads (a thread per task: more
threads, more reads in flight at once; ``cluster.local.threads_per_worker`` in the config), start-up excluded, worker
warmed up, its open files closed before each run; the latencies take turns within each round. The files are in the page cache: the
difference between latencies is what the round trips cost. The proxy counts the bytes it forwarded, to show that the
reads went through it.

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {events, chunksize, latencies_ms,
protocols, threads, rounds}, ``files``, ``workers`` (1) and ``inputs``: [{threads, protocol, latency_ms, runs:
[{seconds, events, bytes_down}]}]; ``benchmarks/render.py`` makes the "## Streaming over slow links" section of it (the
best run of each, and its rate relative to the same threads and protocol at 0 ms).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _lib import output
from _lib.data import served_dataset
from _lib.proxy import DelayProxy
from _lib.readers import warm_worker

from deploy.clusters import dask_client
from deploy.xrootd import XRootDServer
from processors.chunks import clear_trees
from processors.engine import process_files
from processors.processor import DiphotonProcessor


def through(urls: list[str], port: int, proxy: DelayProxy) -> list[str]:
    """``urls`` of the server's ``port`` pointed at the proxy instead."""
    return [url.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{proxy.port}/") for url in urls]


def one_run(urls: list[str], client, chunksize: int, proxy: DelayProxy) -> dict[str, float]:
    """One ``process_files`` over ``urls`` with no file open on the worker: seconds, events, bytes through the proxy."""
    client.run(clear_trees)
    before = proxy.bytes_down
    start = time.perf_counter()
    result = process_files(urls, processor=DiphotonProcessor(), client=client, chunksize=chunksize, retries=0,
                           progress=False)
    seconds = time.perf_counter() - start
    if result.failed_chunks:
        raise SystemExit(f"error: failed chunks: {result.failed_chunks[:3]}")
    return {"seconds": seconds, "events": result.events_processed, "bytes_down": proxy.bytes_down - before}


def trust(cafile: str) -> None:
    """Have https reads in this (worker) process trust ``cafile``, the server's self-signed certificate."""
    os.environ["SSL_CERT_FILE"] = cafile


def numbers(text: str) -> list[int]:
    return [int(word) for word in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--chunksize", type=int, default=500_000, help="entries per chunk (the config's default)")
    parser.add_argument("--latencies", type=numbers, default=[0, 10, 50], help="milliseconds each way, comma-separated")
    parser.add_argument("--protocols", type=lambda text: text.split(","), default=["root", "https"])
    parser.add_argument("--threads", type=numbers, default=[1, 8, 32], help="threads of the one worker process, each")
    parser.add_argument("--data", type=Path, default=Path("/tmp/opendata-stats-bench/streaming"))
    parser.add_argument("--rounds", type=int, default=3)
    output.add_arguments(parser)
    args = parser.parse_args()
    if 0 not in args.latencies or any(x < 0 for x in args.latencies) or not set(args.protocols) <= {"root", "https"}:
        parser.error("--latencies must include 0 and be non-negative; --protocols are root and/or https")
    if any(x < 1 for x in args.threads) or args.rounds < 1:
        parser.error("--threads and --rounds must be positive")
    settings = {"events": args.events, "chunksize": args.chunksize, "latencies_ms": args.latencies,
                "protocols": args.protocols, "threads": args.threads, "rounds": args.rounds}
    document = output.start("slow_link", output.command("bench_slow_link.py", args, "events", "chunksize", "latencies", "protocols", "threads", "rounds"), settings)

    files = served_dataset(args.data, args.events)
    runs = {(threads, protocol, latency): [] for threads in args.threads for protocol in args.protocols
            for latency in args.latencies}
    with XRootDServer(args.data) as server:
        for threads in args.threads:
            with dask_client(workers=1, threads_per_worker=threads) as client:
                client.run(trust, str(server.handle.ca_file))
                client.run(warm_worker)
                for protocol in args.protocols:
                    port = server.port if protocol == "root" else server.http_port
                    with DelayProxy(port) as proxy:
                        urls = through(server.urls(protocol), port, proxy)
                        one_run(urls[:1], client, args.chunksize, proxy)  # warm up: imports, first connection
                        for _ in range(args.rounds):
                            for latency in args.latencies:
                                proxy.latency = latency / 1000
                                runs[threads, protocol, latency].append(one_run(urls, client, args.chunksize, proxy))
    document.update({"files": len(files), "workers": 1,
                     "inputs": [{"threads": threads, "protocol": protocol, "latency_ms": latency, "runs": done}
                                for (threads, protocol, latency), done in runs.items()]})
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
