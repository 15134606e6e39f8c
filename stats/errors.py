"""Exceptions raised by the statistics layer."""

from __future__ import annotations


class StatsError(Exception):
    """Base class of every error the statistics layer raises on bad input or a failed computation."""


class HistogramError(StatsError):
    """A histogram is empty, has non-finite values, or its edges do not match."""


class FitError(StatsError):
    """A fit failed (did not converge, or produced no usable uncertainty)."""


class WorkspaceError(StatsError):
    """A workspace or patchset is invalid (bad JSON, schema violation, missing file)."""


class DigestMismatchError(WorkspaceError):
    """A patchset's digest does not match the background-only workspace it is applied to."""


class UnknownPatchError(WorkspaceError):
    """No patch of the patchset has the requested name or values."""
