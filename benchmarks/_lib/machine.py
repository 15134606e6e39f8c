"""What a benchmark run records about where it ran: the machine (cores, CPU model, memory, load) and the software."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

#: Distributions whose versions every document records (those installed).
PACKAGES = ("opendata-stats", "numpy", "uproot", "awkward", "coffea", "dask", "distributed", "pyhf", "jax", "iminuit",
            "isal")


def now() -> str:
    """The time, as the documents write it: ``2026-12-01 23:31 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return list(os.getloadavg())


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """The machine now: ``cores``, ``cpu``, ``memory_gib``, ``load_average`` (1, 5, 15 min), ``system``."""
    import psutil

    return {"cores": os.cpu_count(), "cpu": cpu_model(), "memory_gib": psutil.virtual_memory().total / 2**30,
            "load_average": load_average(), "system": platform.platform()}


def software() -> dict[str, Any]:
    """Python's and :data:`PACKAGES`' versions, and the checkout's commit (``dirty``: with uncommitted changes)."""
    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True)
        versions["commit"], versions["dirty"] = commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return versions
