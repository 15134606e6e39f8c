"""A signal-mass grid as a pyhf PatchSet, so that one hypotest engine serves the analysis and published likelihoods.

The background-only workspace holds the observed m_yy spectrum and the fitted background (with its per-bin
``shapesys``); each patch adds a Gaussian signal at one mass, scaled by the normfactor ``mu``. The result has the
HEPData layout (``BkgOnly.json`` + ``patchset.json``, labels ``["mass"]``) and goes through the same loading,
digest check and Dask scan as the ATLAS SUSY 1Lbb likelihoods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyhf

from stats.errors import HistogramError, WorkspaceError
from stats.profile import gaussian_template
from stats.workspace import CHANNEL, POI


class MassPatchSet(NamedTuple):
    """A background-only workspace and the patchset of signal hypotheses over mass."""

    background_only: dict[str, Any]
    patchset: dict[str, Any]


def build_mass_patchset(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    background: Sequence[float] | np.ndarray,
    background_unc: Sequence[float] | np.ndarray,
    *,
    masses: Sequence[float] | np.ndarray,
    resolution: float,
    signal_yield: float,
    name: str = "Hyy_mass_scan",
) -> MassPatchSet:
    """Build the background-only workspace and a patchset with one signal hypothesis per mass.

    Args:
        counts: observed events per bin.
        edges: bin edges (one more than ``counts``).
        background: expected background per bin (the background fit).
        background_unc: absolute background uncertainty per bin (``shapesys``).
        masses: signal masses, one patch each, all inside the histogram range.
        resolution: Gaussian width of the signal peak in GeV.
        signal_yield: expected signal events at ``mu = 1``.
        name: patchset name.

    Raises:
        HistogramError: on mismatched sizes, non-finite input or a mass outside the histogram.
        WorkspaceError: if pyhf rejects the resulting workspace or patchset.

    Returns:
        MassPatchSet: both specifications, JSON-serialisable.
    """
    counts, edges = np.asarray(counts, dtype=float), np.asarray(edges, dtype=float)
    background, background_unc = np.asarray(background, dtype=float), np.asarray(background_unc, dtype=float)
    masses = np.asarray(masses, dtype=float)
    if not (counts.size + 1 == edges.size and background.size == background_unc.size == counts.size):
        raise HistogramError(
            f"sizes do not match: {counts.size} counts, {edges.size} edges, {background.size} background bins, "
            f"{background_unc.size} uncertainties"
        )
    for label, values in (("counts", counts), ("background", background), ("background_unc", background_unc)):
        if not np.all(np.isfinite(values)):
            raise HistogramError(f"{label} has non-finite values")
    outside = masses[(masses <= edges[0]) | (masses >= edges[-1])]
    if outside.size:
        raise HistogramError(f"masses {outside.tolist()} lie outside the histogram range {edges[0]}-{edges[-1]} GeV")
    if not (resolution > 0 and signal_yield > 0):
        raise HistogramError(f"resolution ({resolution}) and signal yield ({signal_yield}) must be positive")

    background_only = {
        "channels": [{
            "name": CHANNEL,
            "samples": [{
                "name": "background",
                "data": background.tolist(),
                "modifiers": [{"name": "background_uncertainty", "type": "shapesys",
                               "data": background_unc.tolist()}],
            }],
        }],
        "observations": [{"name": CHANNEL, "data": counts.tolist()}],
        "measurements": [{"name": name, "config": {"poi": POI, "parameters": []}}],
        "version": "1.0.0",
    }
    patches = []
    for mass in masses:
        signal = signal_yield * gaussian_template(edges, mass, resolution)
        sample = {"name": "signal", "data": signal.tolist(),
                  "modifiers": [{"name": POI, "type": "normfactor", "data": None}]}
        patches.append({
            "metadata": {"name": f"mass_{mass:.2f}".replace(".", "p"), "values": [float(mass)]},
            "patch": [{"op": "add", "path": "/channels/0/samples/0", "value": sample}],
        })
    patchset = {
        "metadata": {
            "name": name,
            "description": f"Gaussian signal (width {resolution:.3g} GeV, {signal_yield:.4g} events at mu=1) "
                           f"at {masses.size} masses over the fitted background",
            "digests": {"sha256": pyhf.utils.digest(background_only)},
            "labels": ["mass"],
            # pyhf's schema demands a HEPData reference; this grid is not on HEPData, so it cites the analysis it
            # emulates: the ATLAS observation of the Higgs boson (INSPIRE 1124337).
            "references": {"hepdata": "ins1124337"},
        },
        "patches": patches,
        "version": "1.0.0",
    }
    try:
        pyhf.PatchSet(patchset).verify(pyhf.Workspace(background_only))
    except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.PatchSetVerificationError) as err:
        raise WorkspaceError(f"invalid mass patchset: {err}") from err
    return MassPatchSet(background_only, patchset)
