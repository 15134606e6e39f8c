"""Shared fixtures: a real XRootD server and a real Dask scheduler with two workers, both on 127.0.0.1.

``xrootd_server`` (session): an :class:`deploy.xrootd.XRootDServer` over an empty world-readable directory;
write ROOT files into ``xrootd_server.handle.served_dir`` and use ``xrootd_server.urls()``. Tests that stop it
must restart it (``xrootd_server.restart()``) before returning; or start their own ``XRootDServer``.

``dask_scheduler_address`` (session): the ``tcp://127.0.0.1:PORT`` address of a ``dask scheduler`` process with
two ``dask worker`` processes (one thread each) connected.

``client`` (module): a ``distributed.Client`` of a local cluster of two single-threaded worker processes on
127.0.0.1, started by :func:`deploy.clusters.dask_client` as the command starts one; each test module that asks
for it gets its own. Tests that kill a worker or need workers that have run nothing start their own.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.xrootd import CLIENT_ENV, XRootDServer, free_port

# Before any root:// access in this process or the workers it starts: fail fast on a stopped server.
for _name, _value in CLIENT_ENV.items():
    os.environ.setdefault(_name, _value)

# Compiled likelihoods are shared by the test session's engines, not left in the user's cache.
if "OPENDATA_STATS_JAX_CACHE" not in os.environ:
    os.environ["OPENDATA_STATS_JAX_CACHE"] = tempfile.mkdtemp(prefix="opendata-stats-jax-")
    atexit.register(shutil.rmtree, os.environ["OPENDATA_STATS_JAX_CACHE"], ignore_errors=True)

#: Seconds the Dask processes get to start and connect.
DASK_START_TIMEOUT = 60


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    """A running XRootD server (root:// and https://) over an initially empty directory."""
    if shutil.which("xrootd") is None:
        pytest.skip("xrootd is not on PATH (install the xrootd-server package)")
    # A world-readable directory is served in place, so files written later are served too.
    directory = Path(tempfile.mkdtemp(prefix="opendata-xrootd-data-"))
    directory.chmod(0o755)
    try:
        with XRootDServer(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def dask_scheduler_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a real ``dask scheduler`` on 127.0.0.1 with two single-threaded ``dask worker`` processes."""
    from distributed import Client

    workdir = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = [sys.executable, "-m", "dask"]
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    # The test modules pytest imported (and their helper functions) must be importable by the workers too.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))

    def spawn(name: str, arguments: list[str]) -> None:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        processes.append(
            subprocess.Popen(dask + arguments, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        )

    try:
        spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                            "--dashboard-address", "127.0.0.1:0"])  # fmt: skip
        for index in range(2):
            spawn(f"worker-{index}", ["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
                                      "--no-dashboard", "--memory-limit", "2GiB",
                                      "--local-directory", str(workdir / f"worker-{index}")])  # fmt: skip
        deadline = time.monotonic() + DASK_START_TIMEOUT
        with Client(address, timeout=f"{DASK_START_TIMEOUT}s") as client:
            client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
        yield address
    finally:
        _stop(processes[1:])
        _stop(processes[:1])
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A Dask client of two local single-threaded worker processes, shared by the tests of one module."""
    from deploy.clusters import dask_client

    with dask_client(workers=2, announce=False) as dask:
        yield dask


@pytest.fixture(autouse=True)
def _pyhf_default_backend() -> Iterator[None]:
    """Each test leaves pyhf on its default numpy backend and scipy optimizer: a test that switches cannot leak."""
    yield
    pyhf = sys.modules.get("pyhf")
    if pyhf is not None:
        tensorlib, optimizer = pyhf.get_backend()
        if tensorlib.name != "numpy" or optimizer.name != "scipy" or getattr(optimizer, "tolerance", None):
            pyhf.set_backend("numpy", "scipy")
