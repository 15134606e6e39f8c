"""The tutorial's workspace and cabinetry inference, checked against pyhf run directly and against toy truth."""

import json

import cabinetry
import numpy as np
import pyhf
import pytest
from scipy.stats import norm
from _toys import make_toy

from stats.background import fit_background
from stats.errors import FitError, WorkspaceError
from stats import inference
from stats.inference import asimov_significance, discovery_significance, fit_signal_strength, prefit_yields
from stats.workspace import build_workspace, load_workspace, model_info, save_workspace

TRUE_YIELD = 1800.0


@pytest.fixture(scope="module")
def toy():
    return make_toy(seed=1, signal_yield=TRUE_YIELD)


@pytest.fixture(scope="module")
def fit(toy):
    return fit_background(toy.counts, toy.edges, mass=125.0)


@pytest.fixture(scope="module")
def spec(toy, fit):
    return build_workspace(toy.counts, fit)


def test_workspace_is_the_tutorial_spec(toy, fit, spec, tmp_path):
    (channel,) = spec["channels"]
    samples = {sample["name"]: sample for sample in channel["samples"]}
    np.testing.assert_allclose(samples["signal"]["data"], fit.signal)
    np.testing.assert_allclose(samples["background"]["data"], fit.background)
    assert samples["signal"]["modifiers"] == [{"name": "mu", "type": "normfactor", "data": None}]
    (shapesys,) = samples["background"]["modifiers"]
    assert shapesys["type"] == "shapesys"
    np.testing.assert_allclose(shapesys["data"], fit.background_unc)
    assert spec["observations"][0]["data"] == toy.counts.tolist()
    path = save_workspace(spec, tmp_path / "ws.json")
    assert load_workspace(path) == json.loads(json.dumps(spec))


def test_model_info_matches_pyhf(fit, spec):
    info = model_info(spec)
    assert info["poi"] == "mu"
    assert info["channels"] == ["Hyy"] and info["bins"] == {"Hyy": 60}
    assert sorted(info["samples"]) == ["background", "signal"]
    assert info["n_parameters"] == 61
    # shapesys auxdata is (b / sigma_b)^2 per bin.
    np.testing.assert_allclose(info["auxdata"], (fit.background / fit.background_unc) ** 2, rtol=1e-9)


def test_invalid_workspaces_are_rejected(toy, fit, tmp_path):
    with pytest.raises(WorkspaceError, match="sizes|bins"):
        build_workspace(toy.counts[:10], fit)
    (tmp_path / "bad.json").write_text(json.dumps({"channels": []}))
    with pytest.raises(WorkspaceError, match="invalid workspace"):
        load_workspace(tmp_path / "bad.json")
    with pytest.raises(WorkspaceError, match="cannot read"):
        load_workspace(tmp_path / "missing.json")


@pytest.mark.slow
def test_significance_equals_pyhf_directly_and_the_asimov_expectation(toy, fit, spec):
    result = discovery_significance(spec)
    # Independent path: pyhf's own hypotest on the same spec (not through cabinetry).
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    pyhf.set_backend("numpy", "minuit")
    try:
        p_obs, p_exp = pyhf.infer.hypotest(0.0, workspace.data(model), model, test_stat="q0", return_expected=True)
    finally:
        pyhf.set_backend("numpy", "scipy")
    assert result.observed == pytest.approx(norm.isf(float(p_obs)), abs=0.02)
    assert result.expected == pytest.approx(norm.isf(float(p_exp)), abs=0.02)
    # Truth: the median significance of the injected signal over the true continuum; the observed one
    # fluctuates by about one unit around it.
    expected = asimov_significance(toy.signal, toy.background)
    assert abs(result.observed - expected) < 2.5
    assert abs(result.expected - expected) < 2.5


def test_signal_strength_scales_the_fitted_peak_to_the_truth(fit, spec):
    strength = fit_signal_strength(spec)
    yield_fit = strength.mu * fit.signal_yield
    assert abs(yield_fit - TRUE_YIELD) < 3 * strength.mu_unc * fit.signal_yield
    assert strength.mu == pytest.approx(1.0, abs=2 * strength.mu_unc)


def test_prefit_yield_table_has_samples_and_data(toy, spec):
    rows = {row["sample"]: row for row in prefit_yields(spec)}
    assert {"signal", "background", "total", "data"} <= set(rows)
    assert float(rows["data"]["Hyy\nbin 1"]) == toy.counts[0]


def test_a_workspace_with_every_parameter_fixed_fails_with_a_reason(spec):
    fixed = json.loads(json.dumps(spec))
    fixed["channels"][0]["samples"][1]["modifiers"] = []
    fixed["measurements"][0]["config"]["parameters"] = [{"name": "mu", "fixed": True}]
    with pytest.raises(FitError, match="significance fit failed"):
        discovery_significance(fixed)


@pytest.mark.slow
def test_a_deficit_gives_a_valid_workspace_and_zero_significance():
    toy = make_toy(seed=5, signal_yield=-1500.0)
    fit = fit_background(toy.counts, toy.edges, mass=125.0)
    assert fit.signal_yield < 0
    spec = build_workspace(toy.counts, fit)
    signal = spec["channels"][0]["samples"][0]["data"]
    assert min(signal) >= 0 and sum(signal) == pytest.approx(fit.signal_yield_unc, rel=0.05)
    result = discovery_significance(spec)
    assert result.observed == pytest.approx(0.0, abs=1e-3) and result.observed_p0 == pytest.approx(0.5, abs=1e-3)


def test_a_minimum_on_the_other_side_of_zero_stands():
    """A histosys whose variations both lie below the nominal in a bin: the likelihood has a minimum on each side
    of 0, and cabinetry's fit from pyhf's start stops in the higher one; the fit's mirror image finds the lower one
    (pyhf's own likelihood there), and cabinetry, started there, reaches it."""
    from tests.stats.test_compact_public import two_minima

    spec = two_minima()
    model, data = inference.model_and_data(spec)
    own = cabinetry.fit.fit(model, data)
    result = inference.fit_signal_strength(spec)
    assert result.start == "mirror image"
    assert result.twice_nll < own.best_twice_nll - 1.0
    parameters = result.fit_results.bestfit
    assert np.sign(parameters[0]) == -np.sign(own.bestfit[0])  # shared_jes, on the other side of 0
    assert -2 * float(model.logpdf(parameters, data)[0]) == pytest.approx(result.twice_nll, abs=1e-6)
