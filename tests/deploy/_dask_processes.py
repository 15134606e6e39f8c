"""Real ``dask scheduler`` and ``dask worker`` processes for tests, from an interpreter that cannot import this
project (as on an analysis facility whose image has Dask, coffea and pyhf but not this project), optionally with
TLS.

:func:`bare_python` makes a virtual environment without pip whose ``site-packages`` holds one ``.pth`` line naming
this environment's ``site-packages``: every dependency imports, but the ``.pth`` files there (the editable install's
finder that makes ``processors`` and ``stats`` importable) are not run. Its interpreter is also what the patch
engine's child process runs (``sys.executable``), so the child cannot import the project either, unless shipped.
"""

from __future__ import annotations

import contextlib
import os
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from deploy.xrootd import free_port
from tests.conftest import _stop

#: Seconds the processes get to start and connect.
START_TIMEOUT = 90


def bare_python(directory: Path) -> Path:
    """A virtual environment in ``directory`` with this one's packages but not this project; its interpreter.

    Raises:
        AssertionError: the interpreter can import the project after all.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    ours = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (Path(purelib) / "opendata_stats_test_deps.pth").write_text("".join(f"{path}\n" for path in ours))
    for module in ("stats", "processors"):
        check = subprocess.run([str(python), "-c", f"import {module}"], cwd=directory, capture_output=True, text=True,
                               env=bare_environ(), timeout=60)
        assert check.returncode != 0 and f"No module named '{module}'" in check.stderr, check.stderr
    check = subprocess.run([str(python), "-c", "import distributed, coffea, uproot, pyhf"], cwd=directory,
                           capture_output=True, text=True, env=bare_environ(), timeout=120)
    assert check.returncode == 0, check.stderr
    return python


def bare_environ() -> dict[str, str]:
    """This process's environment without ``PYTHONPATH`` (which could name the project)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


class TLSFiles(NamedTuple):
    """The PEM files every process of a TLS cluster presents and trusts."""

    ca_file: Path
    cert: Path
    key: Path

    def options(self) -> list[str]:
        return ["--tls-ca-file", str(self.ca_file), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]


class Cluster(NamedTuple):
    """A running scheduler's address, and a way to add a worker."""

    address: str
    processes: list[subprocess.Popen[bytes]]
    add_worker: object  # () -> Popen


@contextlib.contextmanager
def dask_cluster(python: Path | str, workdir: Path, *, workers: int = 2, tls: TLSFiles | None = None
                 ) -> Iterator[Cluster]:
    """A ``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes of ``python`` on 127.0.0.1,
    run from ``workdir`` (logs there); stopped on exit."""
    from distributed import Client
    from distributed.security import Security

    protocol = "tls" if tls else "tcp"
    port = free_port()
    address = f"{protocol}://127.0.0.1:{port}"
    security = [] if tls is None else tls.options()
    processes: list[subprocess.Popen[bytes]] = []
    logs = []

    def spawn(name: str, arguments: list[str]) -> subprocess.Popen[bytes]:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed at exit
        logs.append(log)
        process = subprocess.Popen([str(python), *arguments, *security], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=workdir, env=bare_environ())
        processes.append(process)
        return process

    def add_worker() -> subprocess.Popen[bytes]:
        index = len(processes) - 1
        return spawn(f"worker-{index}", ["-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                                         "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                         "--memory-limit", "2GiB", "--local-directory", str(workdir / f"w{index}")])

    try:
        spawn("scheduler", ["-m", "distributed.cli.dask_scheduler", "--protocol", protocol, "--host", "127.0.0.1",
                            "--port", str(port), "--dashboard-address", "127.0.0.1:0"])
        for _ in range(workers):
            add_worker()
        kwargs = {} if tls is None else {"security": Security(tls_ca_file=str(tls.ca_file), tls_client_cert=str(tls.cert),
                                                               tls_client_key=str(tls.key), require_encryption=True)}
        deadline = time.monotonic() + START_TIMEOUT
        with Client(address, timeout=f"{START_TIMEOUT}s", **kwargs) as client:
            if workers:
                client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
        yield Cluster(address, processes, add_worker)
    finally:
        _stop(processes[1:])
        _stop(processes[:1])
        for log in logs:
            log.close()
