"""The mass-grid PatchSet against a workspace built by hand and pyhf's hypotest run directly."""

import numpy as np
import pyhf
import pytest
from scipy.stats import norm

from stats.errors import HistogramError
from stats.mass_patchset import build_mass_patchset

EDGES = np.linspace(100.0, 160.0, 21)  # few bins keep the two hypotests fast
CENTRES = 0.5 * (EDGES[:-1] + EDGES[1:])


@pytest.fixture(scope="module")
def spectrum():
    rng = np.random.default_rng(7)
    background = 6000.0 * np.exp(-(CENTRES - 100.0) / 25.0)
    counts = rng.poisson(background).astype(float)
    return counts, background, 0.02 * background


def test_patch_equals_hand_built_workspace(spectrum):
    counts, background, unc = spectrum
    result = build_mass_patchset(counts, EDGES, background, unc, masses=[120.0, 125.0], resolution=1.7,
                                 signal_yield=300.0)
    patchset = pyhf.PatchSet(result.patchset)
    assert patchset.labels == ["mass"]
    assert [p.name for p in patchset.patches] == ["mass_120p00", "mass_125p00"]
    patched = patchset.apply(pyhf.Workspace(result.background_only), [125.0])

    # Independent construction: the signal is the Gaussian's probability in each bin, times the yield.
    signal = 300.0 * np.array([norm.cdf(hi, 125.0, 1.7) - norm.cdf(lo, 125.0, 1.7) for lo, hi in zip(EDGES, EDGES[1:])])
    by_hand = pyhf.Workspace({
        "channels": [{"name": "Hyy", "samples": [
            {"name": "signal", "data": signal.tolist(), "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": background.tolist(), "modifiers": [
                {"name": "background_uncertainty", "type": "shapesys", "data": unc.tolist()}]},
        ]}],
        "observations": [{"name": "Hyy", "data": counts.tolist()}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    })
    cls_patched = pyhf.infer.hypotest(1.0, patched.data(patched.model()), patched.model(), test_stat="qtilde")
    cls_hand = pyhf.infer.hypotest(1.0, by_hand.data(by_hand.model()), by_hand.model(), test_stat="qtilde")
    assert float(cls_patched) == pytest.approx(float(cls_hand), rel=1e-6)
    # 300 signal events over ~3000 background in the peak are excluded at mu=1.
    assert float(cls_patched) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masses": [99.0]}, "outside the histogram"),
        ({"masses": [125.0], "resolution": 0.0}, "must be positive"),
    ],
)
def test_bad_input(spectrum, kwargs, message):
    counts, background, unc = spectrum
    options = {"resolution": 1.7, "signal_yield": 100.0, **kwargs}
    with pytest.raises(HistogramError, match=message):
        build_mass_patchset(counts, EDGES, background, unc, **options)


def test_mismatched_sizes(spectrum):
    counts, background, unc = spectrum
    with pytest.raises(HistogramError, match="sizes do not match"):
        build_mass_patchset(counts[:-1], EDGES, background, unc, masses=[125.0], resolution=1.7, signal_yield=1.0)
