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


def _signal_of(result, mass):
    """The signal sample of the patch at ``mass``, applied by pyhf."""
    patched = pyhf.PatchSet(result.patchset).apply(pyhf.Workspace(result.background_only), [mass])
    sample = next(s for s in patched["channels"][0]["samples"] if s["name"] == "signal")
    assert sample["modifiers"] == [{"name": "mu", "type": "normfactor", "data": None}]
    return np.asarray(sample["data"])


def _moved_by_overlap(template, edges, shift):
    """Independent reference: a histogram of uniform density within each bin, moved by ``shift`` and rebinned by
    the overlap of each moved bin with each bin."""
    moved = np.zeros_like(template)
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        for j, (source_low, source_high) in enumerate(zip(edges[:-1] + shift, edges[1:] + shift)):
            overlap = max(0.0, min(high, source_high) - max(low, source_low))
            moved[i] += template[j] * overlap / (source_high - source_low)
    return moved


# An asymmetric peak (a low-mass tail, as the simulated H->yy signal has) around 125 GeV in 3 GeV bins.
TEMPLATE = np.zeros(EDGES.size - 1)
TEMPLATE[5:11] = [3.0, 9.0, 40.0, 210.0, 95.0, 12.0]


def test_a_simulated_template_is_the_signal_at_its_mass_and_moved_to_the_others(spectrum):
    counts, background, unc = spectrum
    result = build_mass_patchset(counts, EDGES, background, unc, masses=[119.0, 125.0, 130.4],
                                 signal_template=TEMPLATE, template_mass=125.0)
    at_125 = _signal_of(result, 125.0)
    assert np.array_equal(at_125, TEMPLATE)  # the simulated template itself: sum and shape
    # 6 GeV lower is two bins down, exactly.
    assert np.array_equal(_signal_of(result, 119.0), np.roll(TEMPLATE, -2))
    moved = _signal_of(result, 130.4)
    assert moved == pytest.approx(_moved_by_overlap(TEMPLATE, EDGES, 5.4), abs=1e-9)
    assert moved.sum() == pytest.approx(TEMPLATE.sum(), rel=1e-12)  # far from the edges nothing is lost
    assert "simulated at 125 GeV" in result.patchset["metadata"]["description"]


def test_a_template_moved_across_the_end_loses_what_leaves_the_range(spectrum):
    counts, background, unc = spectrum
    result = build_mass_patchset(counts, EDGES, background, unc, masses=[156.5], signal_template=TEMPLATE)
    moved = _signal_of(result, 156.5)  # 31.5 GeV up: the peak bin (124-127 GeV) ends at 155.5-158.5 GeV
    assert moved == pytest.approx(_moved_by_overlap(TEMPLATE, EDGES, 31.5), abs=1e-9)
    assert moved.sum() < TEMPLATE.sum()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"signal_template": TEMPLATE, "signal_yield": 10.0}, "not both"),
        ({"signal_template": TEMPLATE[:-1]}, "the data's 20 bins"),
        ({"signal_template": -TEMPLATE}, "positive sum"),
        ({"resolution": 1.7}, "must be positive"),
    ],
)
def test_bad_signal(spectrum, kwargs, message):
    counts, background, unc = spectrum
    with pytest.raises(HistogramError, match=message):
        build_mass_patchset(counts, EDGES, background, unc, masses=[125.0], **kwargs)
