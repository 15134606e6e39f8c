"""What a result was computed with: the project's version, recorded in every result's identity."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def project_version() -> str:
    """The installed opendata-stats version, ``"unknown"`` when run from an uninstalled tree.

    Results record it so that a rerun by another version recomputes instead of reusing them.
    """
    try:
        return version("opendata-stats")
    except PackageNotFoundError:
        return "unknown"
