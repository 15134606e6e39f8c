"""This project's code on a facility's Dask workers, and their packages checked against this client's.

A facility's scheduler and workers (coffea-casa's ``tls://localhost:8786``) run the facility's image, which has
Dask, coffea, uproot and pyhf but not this project, while the tasks refer to functions of ``processors`` and
``stats`` by module name and the patch scan starts ``python -m stats.compact.worker`` on each worker.
:func:`prepare_workers` runs once when a client connects to such a scheduler:

1. It asks the scheduler and every worker what they have (:func:`deploy.worker_probe.describe`, sent by value):
   package versions, and the sha256 of the ``processors`` and ``stats`` code they would import.
2. Versions that must match end in one :class:`~deploy.errors.DeployError`: Python, dask, distributed and
   cloudpickle by major.minor (the task graph and functions are pickled between them), numpy by major version
   (arrays and compiled extensions); other differences (coffea, uproot, awkward, pyhf, jax) and packages a worker
   lacks are warnings.
3. Where any of them would not import this client's code (missing, or another version), the two packages'
   sources go as one zip archive through ``Client.upload_file``: distributed's plugins put it on the scheduler
   and on every worker, now and as workers join, insert it at the front of ``sys.path`` and import it. Modules of
   another version a process already imported are dropped first. The patch engine's child process imports from
   the same archive (:mod:`stats.patchscan` puts it on the child's ``PYTHONPATH``).
4. It checks again that every process now imports exactly this client's code.

Workers that already import the same code (a local cluster, a facility image with this version installed) get
nothing. A scheduler with no workers yet (adaptive scaling) is shipped the code unconditionally, for the workers
that join, and their versions cannot be checked.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import cloudpickle

from deploy import worker_probe
from deploy.errors import DeployError

__all__ = ["MUST_MATCH", "Preparation", "check_versions", "code_archive", "prepare_workers"]

log = logging.getLogger(__name__)

# The probe runs where this project is not installed: send its functions themselves, not their module's name.
cloudpickle.register_pickle_by_value(worker_probe)

#: Packages whose leading version numbers must be equal in the client, scheduler and workers, and how many.
MUST_MATCH = {"python": 2, "dask": 2, "distributed": 2, "cloudpickle": 2, "numpy": 1}
#: Packages only the workers' tasks need (the scheduler is not asked about them); a difference is a warning.
TASK_PACKAGES = ("coffea", "uproot", "awkward", "pyhf", "jax")
#: What each task package is for, in a warning about it.
_NEEDED_BY = {"coffea": "process", "uproot": "process", "awkward": "process", "pyhf": "the scans",
              "jax": "scan-patchset --backend jax"}

#: Prefix of the shipped archive's name; the rest is the code's digest.
ARCHIVE_PREFIX = "opendata_stats_code_"


class Preparation(NamedTuple):
    """What :func:`prepare_workers` found and did.

    Attributes:
        workers: workers connected when it ran.
        shipped: name of the archive uploaded, None when every process already imported this client's code.
        digest: sha256 of this client's ``processors`` and ``stats`` code.
        warnings: version differences that do not stop a run (each also reported).
    """

    workers: int
    shipped: str | None
    digest: str
    warnings: list[str]


def code_archive(directory: str | Path, digest: str | None = None) -> Path:
    """Write this process's ``processors`` and ``stats`` sources as a zip archive into ``directory``.

    The archive holds exactly the files :func:`deploy.worker_probe.code_digest` covers, in the same order and with
    fixed timestamps, so a process importing from it has the same digest. Its name carries the digest, so that a
    worker never overwrites an archive another version is importing from.

    Returns:
        The archive's path.
    """
    digest = digest or _client_digest()
    path = Path(directory) / f"{ARCHIVE_PREFIX}{digest[:16]}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in worker_probe.CODE_PACKAGES:
            for relative, content in worker_probe.package_files(package):
                archive.writestr(zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0)), content,
                                 compress_type=zipfile.ZIP_DEFLATED)
    return path


def _client_digest() -> str:
    digest = worker_probe.code_digest()
    if digest is None:
        missing = [name for name in worker_probe.CODE_PACKAGES if not any(worker_probe.package_files(name))]
        raise DeployError(f"cannot find this project's {' and '.join(missing) or 'code'} package files to ship to "
                          "the Dask workers")
    return digest


def _leading(version: str, count: int) -> tuple[str, ...]:
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple((match.group(0) if match else version).split(".")[:count])


def _where(processes: list[str]) -> str:
    if processes == ["scheduler"]:
        return "the scheduler"
    workers = [name for name in processes if name != "scheduler"]
    text = f"{len(workers)} worker{'s' if len(workers) != 1 else ''}" if len(workers) > 1 else f"worker {workers[0]}"
    return text + (" and the scheduler" if "scheduler" in processes else "")


def check_versions(client_versions: Mapping[str, str | None], remote: Mapping[str, Mapping[str, str | None]]
                   ) -> tuple[list[str], list[str]]:
    """Compare the scheduler's and workers' package versions with the client's.

    Args:
        client_versions: this process's :func:`deploy.worker_probe.versions`.
        remote: process name (``"scheduler"`` or a worker address) -> its versions.

    Returns:
        ``(errors, warnings)``: each a sentence naming the package, the version found and where, and this client's.
    """
    errors, warnings = [], []
    for package, count in MUST_MATCH.items():
        mine = client_versions.get(package)
        if mine is None:
            continue
        differing: dict[str | None, list[str]] = {}
        for name, found in remote.items():
            theirs = found.get(package)
            if theirs is None or _leading(theirs, count) != _leading(mine, count):
                differing.setdefault(theirs, []).append(name)
        rule = "major.minor must match" if count == 2 else "the major version must match"
        for theirs, names in differing.items():
            found = f"no {package}" if theirs is None else f"{package} {theirs}"
            errors.append(f"{found} on {_where(names)} (this client: {mine}; {rule})")
    for package in TASK_PACKAGES:
        mine = client_versions.get(package)
        differing = {}
        for name, found in remote.items():
            if name != "scheduler" and found.get(package) != mine and mine is not None:
                differing.setdefault(found.get(package), []).append(name)
        for theirs, names in differing.items():
            if theirs is None:
                warnings.append(f"no {package} on {_where(names)} ({_NEEDED_BY[package]} will fail there)")
            else:
                warnings.append(f"{package} {theirs} on {_where(names)} (this client: {mine})")
    return errors, warnings


def _probe(client: Any) -> dict[str, dict[str, Any]]:
    """``describe()`` of the scheduler and every worker; a process that fails to answer is left out."""
    answers = {"scheduler": client.run_on_scheduler(worker_probe.describe)}
    for address, answer in client.run(worker_probe.describe, on_error="return").items():
        if isinstance(answer, BaseException):
            log.warning("worker %s did not answer the version probe: %s", address, answer)
        else:
            answers[address] = answer
    return answers


def _ship(client: Any, digest: str, stale: list[str]) -> str:
    if stale:  # processes that imported another version of the code: import the shipped one instead
        if "scheduler" in stale:
            client.run_on_scheduler(worker_probe.forget)
        workers = [name for name in stale if name != "scheduler"]
        if workers:
            client.run(worker_probe.forget, workers=workers, on_error="return")
    with tempfile.TemporaryDirectory(prefix="opendata-stats-ship-") as directory:
        archive = code_archive(directory, digest)
        client.upload_file(str(archive), load=True)  # read into the plugins here; the file is not needed after
        return archive.name


def _lacking(answers: Mapping[str, Mapping[str, Any]], digest: str) -> list[str]:
    """The processes that would not import this client's code; never this process (a local cluster's scheduler
    runs in it, and its code is this client's by definition, even while its files are being edited)."""
    here = (socket.gethostname(), os.getpid())
    return [name for name, answer in answers.items()
            if answer["code"] != digest and tuple(answer.get("process") or ()) != here]


def prepare_workers(client: Any, *, report: Callable[[str], None] | None = None) -> Preparation:
    """Check the scheduler's and workers' packages against this client's, and ship this project's code where they
    would not import it (module docstring).

    Args:
        client: a client connected to an existing scheduler.
        report: called with each warning line (``warning: ...``); they are logged in any case.

    Returns:
        What was found and done.

    Raises:
        DeployError: a version that must match does not, or the workers still do not import this client's code
            after shipping it.
    """
    digest = _client_digest()
    answers = _probe(client)
    errors, warnings = check_versions(worker_probe.versions(),
                                      {name: answer["versions"] for name, answer in answers.items()})
    address = getattr(client.scheduler, "address", "the scheduler")
    if errors:
        raise DeployError(f"the Dask cluster at {address} does not match this client: " + "; ".join(errors))
    workers = len(answers) - 1
    if workers == 0:
        warnings.append(f"no Dask workers at {address} yet: their packages are not checked; this project's code "
                        "is shipped to them as they join")
    for line in warnings:
        log.warning("%s", line)
        if report is not None:
            report(f"warning: {line}")
    lacking = _lacking(answers, digest)
    if not lacking and workers > 0:
        return Preparation(workers, None, digest, warnings)
    stale = [name for name in lacking if answers[name]["code"] is not None]  # imported another version: drop it
    shipped = _ship(client, digest, stale)
    log.info("shipped %s (processors and stats) to the scheduler and workers at %s", shipped, address)
    still = _lacking(_probe(client), digest)
    if still:
        raise DeployError(f"the processors/stats code on {_where(still)} at {address} is not this client's even "
                          f"after {shipped} was shipped")
    return Preparation(workers, shipped, digest, warnings)
