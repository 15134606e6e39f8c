"""Exceptions raised by the statistics layer."""

from __future__ import annotations


class StatsError(Exception):
    """Base class of every error the statistics layer raises on bad input or a failed computation."""


class HistogramError(StatsError):
    """A histogram is empty, has non-finite values, or its edges do not match."""


class FitError(StatsError):
    """A fit failed (did not converge, or produced no usable uncertainty)."""


class IdentityMismatchError(StatsError):
    """A stored result (a checkpoint to resume from) was computed from other inputs or settings than asked for."""


class WorkspaceError(StatsError):
    """A workspace or patchset is invalid (bad JSON, schema violation, missing file)."""


class DigestMismatchError(WorkspaceError):
    """A patchset's digest does not match the background-only workspace it is applied to."""


class UnknownPatchError(WorkspaceError):
    """No patch of the patchset has the requested name or values."""


def first_line(error: BaseException, *, typed: bool = False, limit: int | None = None) -> str:
    """The first non-blank line of ``error``'s message (its type name when it has none), stripped.

    Errors are reported in one line (``error: ...``, a failed point's reason), and libraries' messages run to
    several (pyhf's schema errors dump the whole instance). ``typed`` prefixes the type name, for errors that are
    not the project's own (``KeyError: 'x'``); ``limit`` cuts the line to that many characters. (The processing
    layer has the same helper in ``processors.errors``: the two layers never import each other.)
    """
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    name = type(error).__name__
    line = (f"{name}: {text}" if typed else text) if text else name
    return line if limit is None else line[:limit]
