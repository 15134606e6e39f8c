"""Dask cluster factories: one entry point that yields a ``distributed.Client``.

Local cluster (default, bound to 127.0.0.1), an existing scheduler (coffea-casa gives
``tls://localhost:8786``), HTCondor through dask-jobqueue, and a Dask Gateway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from distributed import Client, LocalCluster


@contextlib.contextmanager
def dask_client(
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
) -> Iterator[Client]:
    """Yield a Dask client, starting (and afterwards stopping) a local cluster unless ``scheduler`` is given.

    Args:
        workers: number of local worker processes (default: the number of cores).
        scheduler: address of an existing scheduler; no cluster is started.
        threads_per_worker: threads in each local worker process.
        memory_limit: memory limit of each local worker.

    Yields:
        A connected ``distributed.Client``.
    """
    if scheduler is not None:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit=memory_limit,
    ) as cluster, Client(cluster) as client:
        yield client
