"""The compact likelihood: published HistFactory likelihoods as a few dense jax arrays, fitted fast and verified.

- :mod:`stats.compact.model`: the likelihood (a structure compiled once, numbers per patch), checked against pyhf's.
- :mod:`stats.compact.minimise`: the bounded quasi-Newton minimiser and the estimated distance to the minimum.
- :mod:`stats.compact.hypotest`: the five fits of the asymptotic CLs hypotest, each verified by restarts.
- :mod:`stats.compact.padding`: padding the patches of a patchset to one shared structure, with no effect.
- :mod:`stats.compact.engine`: :class:`~stats.compact.engine.PatchEngine`, CLs per patch with pyhf as the fallback.
- :mod:`stats.compact.worker`: the child process a Dask worker runs the engine in (killable on a time limit).

Anything the compact path does not implement, and any fit it cannot verify, raises :class:`Unsupported`; the engine
catches it in one place and computes that patch with pyhf instead, recording why.
"""

from __future__ import annotations


class Unsupported(ValueError):
    """The compact path cannot compute this likelihood or point; the message says why (pyhf computes it instead)."""
