"""A signal-mass grid as a pyhf PatchSet, so that one hypotest engine serves the analysis and published likelihoods.

The background-only workspace holds the observed m_yy spectrum and the fitted background (with its per-bin
``shapesys``); each patch adds a signal at one mass, scaled by the normfactor ``mu``: a simulated signal template
moved to the mass (:func:`stats.hyy_model.shift_template`), or without one a Gaussian peak. The result has the
HEPData layout (``BkgOnly.json`` + ``patchset.json``, labels ``["mass"]``) and goes through the same loading,
digest check and Dask scan as the ATLAS SUSY 1Lbb likelihoods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyhf

from stats.errors import HistogramError, WorkspaceError
from stats.hyy_model import shift_template
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
    resolution: float | None = None,
    signal_yield: float | None = None,
    signal_template: Sequence[float] | np.ndarray | None = None,
    template_mass: float = 125.0,
    name: str = "Hyy_mass_scan",
) -> MassPatchSet:
    """Build the background-only workspace and a patchset with one signal hypothesis per mass.

    The signal of each patch is either a Gaussian (``resolution``, ``signal_yield``) or, with
    ``signal_template``, that template moved from ``template_mass`` to the patch's mass by
    :func:`stats.hyy_model.shift_template`: its shape is the one simulated at ``template_mass`` at every mass
    (only that mass is simulated), and its yield is the template's, less what moves across the histogram's ends.

    Args:
        counts: observed events per bin.
        edges: bin edges (one more than ``counts``).
        background: expected background per bin (the background fit).
        background_unc: absolute background uncertainty per bin (``shapesys``).
        masses: signal masses, one patch each, all inside the histogram range.
        resolution: Gaussian width of the signal peak in GeV (the Gaussian signal; not with ``signal_template``).
        signal_yield: expected signal events at ``mu = 1`` (the Gaussian signal; not with ``signal_template``).
        signal_template: expected signal events per bin at ``mu = 1`` of a signal at ``template_mass`` (e.g. the
            simulated H->yy signal at the data's luminosity), used in place of the Gaussian.
        template_mass: the mass ``signal_template`` was simulated at (GeV).
        name: patchset name.

    Raises:
        HistogramError: on mismatched sizes, non-finite input, a mass outside the histogram, a Gaussian without
            positive ``resolution`` and ``signal_yield``, or both a template and Gaussian parameters.
        WorkspaceError: if pyhf rejects the resulting workspace or patchset.

    Returns:
        MassPatchSet: both specifications, JSON-serialisable.
    """
    counts, edges = np.asarray(counts, dtype=float), np.asarray(edges, dtype=float)
    background, background_unc = np.asarray(background, dtype=float), np.asarray(background_unc, dtype=float)
    masses = np.asarray(masses, dtype=float)
    template = None if signal_template is None else np.asarray(signal_template, dtype=float)
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
    if template is not None:
        if resolution is not None or signal_yield is not None:
            raise HistogramError("give either a signal template or a Gaussian's resolution and signal yield, not both")
        if template.shape != counts.shape or not np.all(np.isfinite(template)) or not template.sum() > 0:
            raise HistogramError(f"the signal template ({template.size} bins, sum {np.sum(template):.4g}) must have "
                                 f"the data's {counts.size} bins, finite values and a positive sum")
    elif not (resolution is not None and signal_yield is not None and resolution > 0 and signal_yield > 0):
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
        if template is None:
            assert resolution is not None and signal_yield is not None  # the Gaussian's, both positive: checked above
            signal = signal_yield * gaussian_template(edges, mass, resolution)
        else:
            signal = shift_template(template, edges, float(mass) - template_mass)
        sample = {"name": "signal", "data": signal.tolist(),
                  "modifiers": [{"name": POI, "type": "normfactor", "data": None}]}
        patches.append({
            "metadata": {"name": f"mass_{mass:.2f}".replace(".", "p"), "values": [float(mass)]},
            "patch": [{"op": "add", "path": "/channels/0/samples/0", "value": sample}],
        })
    patchset = {
        "metadata": {
            "name": name,
            "description": (f"Gaussian signal (width {resolution:.3g} GeV, {signal_yield:.4g} events at mu=1)"
                            if template is None else
                            f"signal template simulated at {template_mass:g} GeV ({template.sum():.4g} events at "
                            f"mu=1), moved to each mass") + f" at {masses.size} masses over the fitted background",
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
