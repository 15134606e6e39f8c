"""Dask cluster factories: one entry point that yields a ``distributed.Client``.

Local cluster (default, bound to 127.0.0.1), an existing scheduler (coffea-casa gives
``tls://localhost:8786``), HTCondor through dask-jobqueue, and a Dask Gateway. Which one, and its settings,
come from the ``cluster`` section of a config file (:mod:`deploy.config`); keyword flags override it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from deploy.config import CLUSTER_KINDS, ClusterConfig, GatewaySettings, HTCondorSettings, TLSSettings, load_config
from deploy.errors import DeployError
from deploy.progress import live_step
from deploy.security import client_security, tls_problem
from deploy.shipping import prepare_workers

if TYPE_CHECKING:
    from dask_gateway import GatewayCluster
    from dask_jobqueue import HTCondorCluster

__all__ = ["WorkerGC", "connect", "dask_client", "gateway_cluster", "htcondor_cluster", "resolve_config"]

log = logging.getLogger(__name__)


def resolve_config(
    config: ClusterConfig | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float | None = None,
    kind: str | None = None,
) -> ClusterConfig:
    """Apply command-line flags on top of a cluster config (flags win).

    Args:
        config: settings from a config file; ``None`` means the defaults (a local cluster).
        workers: local worker processes, or a fixed number of HTCondor/Gateway workers instead of adaptive scaling.
        scheduler: address of an existing scheduler; selects ``kind="scheduler"``.
        threads_per_worker: threads in each local worker process.
        memory_limit: memory limit of each local worker.
        kind: cluster kind, one of ``local``, ``scheduler``, ``htcondor``, ``gateway``.

    Returns:
        The resulting config.
    """
    config = config if config is not None else load_config().cluster
    if scheduler is not None:
        config = config._replace(kind="scheduler", scheduler=config.scheduler._replace(address=scheduler))
    elif kind is not None:
        if kind not in CLUSTER_KINDS:
            raise DeployError(f"unknown cluster kind {kind!r} (known: {', '.join(CLUSTER_KINDS)})")
        config = config._replace(kind=kind)
    local = config.local
    if workers is not None:
        if workers < 1:
            raise DeployError(f"bad value for workers: {workers} (need at least 1)")
        local = local._replace(workers=workers)
        # A fixed worker count on a batch system or gateway means "exactly this many", not adaptive.
        config = config._replace(
            htcondor=config.htcondor._replace(minimum=workers, maximum=workers),
            gateway=config.gateway._replace(minimum=workers, maximum=workers),
        )
    if threads_per_worker is not None:
        local = local._replace(threads_per_worker=threads_per_worker)
    if memory_limit is not None:
        local = local._replace(memory_limit=memory_limit)
    return config._replace(local=local)


def connect(address: str, *, timeout: float = 30.0, tls: TLSSettings | None = None) -> Client:
    """Connect a client to an existing scheduler.

    Args:
        address: scheduler address, e.g. ``tcp://127.0.0.1:8786`` or coffea-casa's ``tls://localhost:8786``.
        timeout: seconds to wait for the connection.
        tls: client certificates for a ``tls://`` address; ``None`` uses the Dask config's (coffea-casa sets them).

    Returns:
        A connected client; close it when done.

    Raises:
        DeployError: the scheduler did not answer within ``timeout``, or TLS failed (the message says which
            certificate to check).
    """
    kwargs: dict[str, Any] = {"timeout": f"{timeout}s"}
    security = client_security(tls)
    if security is not None:
        kwargs["security"] = security
    try:
        return Client(address, **kwargs)
    except (OSError, TimeoutError, TypeError) as err:
        problem = tls_problem(address, err, tls)
        if problem is not None:
            raise DeployError(problem) from None
        if isinstance(err, TypeError):
            raise
        message = f"cannot connect to Dask scheduler at {address} within {timeout:g}s"
        reason = str(err).splitlines()[0] if str(err) else ""
        # The timeout's own message repeats the address and time; other reasons (TLS, refused) add something.
        if reason and "Timed out" not in reason:
            message += f" ({reason})"
        raise DeployError(message) from None
    except ValueError as err:
        raise DeployError(f"bad Dask scheduler address {address!r}: {err}") from None


def htcondor_cluster(settings: HTCondorSettings, **kwargs: Any) -> HTCondorCluster:
    """Build a ``dask_jobqueue.HTCondorCluster`` that submits no job until scaled (check ``job_script()``).

    Args:
        settings: cores, memory, disk, extra submit directives, log directory, worker container image and env.
        **kwargs: passed on to ``HTCondorCluster`` (e.g. ``scheduler_options``).

    Returns:
        The cluster, with its scheduler running and no worker job submitted.
    """
    from dask_jobqueue import HTCondorCluster

    directives = dict(settings.job_extra_directives)
    if settings.image:
        # The container universe (HTCondor >= 9.8) runs the worker inside the analysis image.
        directives.setdefault("universe", "container")
        directives.setdefault("container_image", settings.image)
    prologue = [f"export {name}={shlex.quote(str(value))}" for name, value in settings.env.items()]
    return HTCondorCluster(
        cores=settings.cores,
        memory=settings.memory,
        disk=settings.disk,
        processes=settings.processes,
        job_extra_directives=directives,
        log_directory=settings.log_directory,
        job_script_prologue=prologue,
        interface=settings.interface,
        **kwargs,
    )


def gateway_cluster(settings: GatewaySettings) -> GatewayCluster:
    """Ask a Dask Gateway for a new cluster with the configured options.

    Args:
        settings: gateway address, proxy address, authentication and cluster options.

    Returns:
        The new cluster (shut it down when done).

    Raises:
        DeployError: the gateway address is missing or the gateway did not answer.
    """
    from dask_gateway import GatewayCluster

    if not settings.address:
        raise DeployError("cluster.gateway.address is not set (the Dask Gateway URL, e.g. http://host:8000)")
    try:
        return GatewayCluster(
            address=settings.address,
            proxy_address=settings.proxy_address,
            auth=settings.auth,
            shutdown_on_close=True,
            **settings.cluster_options,
        )
    except (OSError, TimeoutError) as err:
        raise DeployError(f"cannot reach Dask Gateway at {settings.address}: {err}") from None
    except ValueError as err:
        raise DeployError(f"Dask Gateway at {settings.address} rejected the cluster options: {err}") from None


class WorkerGC(WorkerPlugin):
    """Set up each worker for chunk tasks: uproot's reading settings and the garbage collector.

    The worker reads as :func:`processors.tuning.configure_uproot` sets (before anything else, so the XRootD
    client loads with its settings), imports the code its tasks run, then freezes every object alive
    (``gc.freeze``: Dask's, uproot's, awkward's, about 200k), so that no full collection walks them again, and
    runs the youngest generation every ``threshold`` allocations instead of Python's 700. Each opened file leaves
    a few thousand objects in reference cycles (uproot's branch descriptions), which only the collector frees.

    Args:
        threshold: allocations between collections of the youngest generation (``gc_threshold`` of the
            cluster's config section).
        modules: imported before the freeze.
    """

    name = "opendata-stats-gc"

    def __init__(self, threshold: int, *, modules: tuple[str, ...] = ("processors.engine", "processors.processor")) -> None:
        self.threshold = threshold
        self.modules = modules

    def setup(self, worker: Any) -> None:
        try:
            from processors.tuning import configure_uproot
        except ImportError as error:  # a worker image without this package: its tasks will say so
            log.warning("worker setup: cannot import processors.tuning (%s)", error)
        else:
            configure_uproot()  # for the worker's lifetime
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as error:
                log.warning("worker GC tuning: cannot import %s (%s)", module, error)
        gc.collect()
        gc.freeze()
        _, *older = gc.get_threshold()
        gc.set_threshold(self.threshold, *older)


def _tune_gc(client: Client, threshold: int | None) -> None:
    """Register :class:`WorkerGC` on a cluster this process started (its workers now and those that join later);
    an existing scheduler's workers are the facility's and keep their settings."""
    if threshold is not None:
        client.register_plugin(WorkerGC(threshold))


def _restore_environ(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _announce(client: Client, announce: bool) -> None:
    link = client.dashboard_link
    log.info("Dask dashboard: %s", link)
    if announce:
        print(f"Dask dashboard: {link}", file=sys.stderr)


def _scale(cluster: Any, minimum: int, maximum: int) -> None:
    if minimum == maximum:
        cluster.scale(maximum)
    else:
        cluster.adapt(minimum=minimum, maximum=maximum)


@contextlib.contextmanager
def dask_client(
    config: ClusterConfig | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float | None = None,
    kind: str | None = None,
    announce: bool = True,
) -> Iterator[Client]:
    """Yield a Dask client for the configured cluster, stopping whatever was started for it afterwards.

    Args:
        config: cluster settings (``load_config(path).cluster``); ``None`` means a local cluster.
        workers: local worker processes (default: the number of cores), or a fixed number of
            HTCondor/Gateway workers instead of adaptive scaling.
        scheduler: address of an existing scheduler; no cluster is started.
        threads_per_worker: threads in each local worker process.
        memory_limit: memory limit of each local worker.
        kind: override the config's cluster kind.
        announce: also print the dashboard link to stderr (it is always logged), and, for a local cluster, lines
            that count the seconds it takes to start and to stop.

    Yields:
        A connected ``distributed.Client``.

    Raises:
        DeployError: the scheduler or gateway cannot be reached, or a setting is missing.
    """
    config = resolve_config(
        config,
        workers=workers,
        scheduler=scheduler,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        kind=kind,
    )
    with contextlib.ExitStack() as stack:
        if config.kind == "scheduler":
            if not config.scheduler.address:
                raise DeployError("cluster.scheduler.address is not set (e.g. tls://localhost:8786)")
            client = stack.enter_context(
                connect(config.scheduler.address, timeout=config.scheduler.timeout, tls=config.scheduler.tls)
            )
            # The facility's workers: check their packages, ship this project's code if they lack it.
            prepare_workers(client, report=(lambda line: print(line, file=sys.stderr)) if announce else None)
        elif config.kind == "htcondor":
            cluster = stack.enter_context(htcondor_cluster(config.htcondor))
            _scale(cluster, config.htcondor.minimum, config.htcondor.maximum)
            client = stack.enter_context(Client(cluster))
            _tune_gc(client, config.htcondor.gc_threshold)
        elif config.kind == "gateway":
            cluster = stack.enter_context(gateway_cluster(config.gateway))
            _scale(cluster, config.gateway.minimum, config.gateway.maximum)
            client = stack.enter_context(cluster.get_client(set_as_default=False))
            _tune_gc(client, config.gateway.gc_threshold)
        else:
            local = config.local
            # The profiler and the 20 ms tick are diagnostics whose CPU cost the benchmarks measure, the environ
            # defaults tune glibc's malloc for chunk after chunk of arrays (LocalSettings says why). The nanny
            # hands this config to the worker processes it spawns.
            environ = {f"distributed.nanny.pre-spawn-environ.{name}": None if value is None else str(value)
                       for name, value in (local.environ or {}).items()}
            # The nanny writes these (and Dask's own, OMP_NUM_THREADS=1, ...) into this process's os.environ too,
            # where the next cluster's nanny reads them back: put it back as it was when the cluster stops.
            names = {*dask.config.get("distributed.nanny.pre-spawn-environ", {}), *(local.environ or {})}
            stack.callback(_restore_environ, {name: os.environ.get(name) for name in names})
            stack.enter_context(dask.config.set({
                **environ,
                "distributed.worker.profile.enabled": local.profile,
                "distributed.admin.tick.interval": local.tick_interval,
            }))
            # Each worker is a new Python process importing Dask, then (the GC plugin) the processor's modules:
            # seconds, counted on stderr.
            processes = ("a worker process per core" if not local.workers else
                         "1 worker process" if local.workers == 1 else f"{local.workers} worker processes")
            with live_step(f"starting a local Dask cluster ({processes})", enabled=announce):
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=local.workers,
                        threads_per_worker=local.threads_per_worker,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=local.dashboard_address,
                        memory_limit=local.memory_limit,
                    )
                )
                client = stack.enter_context(Client(cluster))
                _tune_gc(client, local.gc_threshold)
        _announce(client, announce)
        try:
            yield client
        finally:
            if config.kind == "local":  # its worker processes stop and the scheduler with them: seconds too
                with live_step("stopping the local Dask cluster", enabled=announce):
                    stack.close()
