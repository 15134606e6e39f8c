"""The H->yy model on simulated templates: mu against the injected truth, observed against expected significance,
the workspace's modifiers as documented, and the spurious signal against a direct fit."""

from __future__ import annotations

import numpy as np
import pyhf
import pytest
import scipy.optimize

from processors.datasets import SIMULATED_SAMPLES
from processors.engine import process_files
from processors.generate import generate_dataset
from processors.histograms import write_histograms
from processors.processor import DiphotonProcessor
from processors.simulation import SimulationProcessor
from stats import hyy_model
from stats.errors import HistogramError

SIGNAL = [sample.name for sample in SIMULATED_SAMPLES if sample.signal]
CONTINUUM = [sample.name for sample in SIMULATED_SAMPLES if not sample.signal]
MASSES = np.linspace(121.0, 129.0, 17)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The default generator at 6 % of the luminosity with its simulated samples (60k events each), processed."""
    directory = tmp_path_factory.mktemp("hyy")
    dataset = generate_dataset(directory, scale=0.06, seed=11, mc=True, mc_events=60_000, workers=1)
    lumi = dataset.truth["lumi_fb"]
    data = process_files(dataset.files, processor=DiphotonProcessor(), progress=False)
    histograms = {}
    for name, path in dataset.sample_files.items():
        output = process_files([path], processor=SimulationProcessor(lumi_fb=lumi), dataset=name, progress=False)
        histograms = {key: histograms[key] + value if key in histograms else value
                      for key, value in output.histograms.items() if hasattr(value, "axes")}
    write_histograms(directory / "histograms.json", histograms)
    templates = hyy_model.load_templates(directory)
    counts = data.histograms["mass"].project("mass").values()
    return dataset.truth, templates, counts


@pytest.fixture(scope="module")
def model(generated):
    truth, templates, counts = generated
    signal = hyy_model.signal_templates(templates, SIGNAL)
    template, scale = hyy_model.continuum_template(counts, templates.edges, templates.total(CONTINUUM))
    variance = templates.variances[CONTINUUM[0]]["nominal"] * scale**2
    spurious = hyy_model.spurious_signal(template, templates.edges, signal.nominal, degree=3, masses=MASSES,
                                         signal_mass=125.0, template_variance=variance)
    spec = hyy_model.build_hyy_workspace(counts, templates.edges, signal, degree=3, spurious=spurious.value)
    return spec, signal, spurious, template


def test_the_signal_template_is_the_simulated_standard_model_yield(generated, model):
    truth, templates, _ = generated
    _, signal, _, _ = model
    expected = sum(truth["simulation"]["samples"][name]["selected_yield"] for name in SIGNAL)
    assert signal.nominal.sum() == pytest.approx(expected, rel=1e-9)
    assert signal.nominal.sum() == pytest.approx(truth["simulation"]["expected_signal_yield"], rel=0.05)
    # The energy scale moves the peak, the resolution widens it; the yields stay (the events stay in the window).
    centers = 0.5 * (templates.edges[1:] + templates.edges[:-1])
    up, down = signal.variations["photon_energy_scale"]
    assert np.average(centers, weights=up) > np.average(centers, weights=signal.nominal) > np.average(
        centers, weights=down)


def test_mu_agrees_with_the_truth_and_observed_differs_from_expected(generated, model):
    truth, _, _ = generated
    spec, signal, _, _ = model
    result = hyy_model.fit_hyy_model(spec)
    injected = truth["simulation"]["signal_strength"]
    assert 1.0 < injected < 1.1  # the data also hold VH and ttH, which are not simulated
    assert abs(result.mu - injected) < 2 * result.mu_unc
    assert 0.2 < result.mu_unc < 2
    significance = result.significance
    assert significance["expected"] > 0.5 and significance["observed"] >= 0
    assert abs(significance["observed"] - significance["expected"]) > 0.01  # no longer equal by construction
    assert result.expected_signal == pytest.approx(signal.nominal.sum())
    compared = hyy_model.compare_with_truth(result.mu, result.mu_unc, injected)
    assert compared["within_2_sigma"] is True and abs(compared["pull"]) <= 2


def test_the_workspace_validates_in_pyhf_with_the_documented_modifiers(generated, model):
    spec, signal, spurious, _ = model
    workspace = pyhf.Workspace(spec)
    pyhf.schema.validate(spec, "workspace.json")
    pdf = workspace.model()
    bernstein = [(hyy_model.BERNSTEIN.format(k), "normfactor") for k in range(4)]
    assert sorted(hyy_model.modifiers(spec)) == sorted([*hyy_model.MODIFIERS, *bernstein])
    assert pdf.config.poi_name == "mu"
    assert pdf.config.param_set("lumi").sigmas == [pytest.approx(0.017)]
    samples = {sample["name"]: sample for sample in spec["channels"][0]["samples"]}
    assert set(samples) == {"signal", hyy_model.SPURIOUS, *(name for name, _ in bernstein)}
    modifiers = {modifier["name"]: modifier for modifier in samples["signal"]["modifiers"]}
    assert set(modifiers) == {"mu", "lumi", "photon_energy_scale", "photon_energy_resolution"}
    for name, (up, down) in signal.variations.items():
        assert modifiers[name]["data"] == {"hi_data": pytest.approx(up), "lo_data": pytest.approx(down)}
    # The spurious signal: no events at the nominal point, +-S_spur signal-shaped events at +-1 sigma.
    (term,) = samples[hyy_model.SPURIOUS]["modifiers"]
    assert samples[hyy_model.SPURIOUS]["data"] == [0.0] * signal.nominal.size and term["type"] == "histosys"
    assert np.sum(term["data"]["hi_data"]) == pytest.approx(spurious.value)
    assert np.array(term["data"]["lo_data"]) == pytest.approx(-np.array(term["data"]["hi_data"]))
    pars = np.asarray(pdf.config.suggested_init(), dtype=float)
    index = pdf.config.par_slice(hyy_model.SPURIOUS).start
    pars[index] = 1.0
    shifted = pdf.main_model.expected_data(pars, return_by_sample=True)[pdf.config.samples.index(hyy_model.SPURIOUS)]
    assert shifted == pytest.approx(signal.nominal / signal.nominal.sum() * spurious.value)
    # Without a luminosity uncertainty or a spurious signal those terms are left out.
    plain = hyy_model.build_hyy_workspace(spec["observations"][0]["data"], np.linspace(100, 160, 61), signal,
                                          degree=2, spurious=0.0, lumi_uncertainty=0.0)
    assert {name for name, _ in hyy_model.modifiers(plain)} == {
        "mu", "photon_energy_scale", "photon_energy_resolution", *(hyy_model.BERNSTEIN.format(k) for k in range(3))}


def _direct_fit(template, edges, shape, degree):
    """The signal yield of polynomial (a power series in GeV around 130) plus ``shape`` fitted to ``template`` by
    scipy's minimiser of the Poisson negative log-likelihood: independent of the project's fit."""
    x = (0.5 * (edges[1:] + edges[:-1]) - 130.0) / 30.0
    design = np.column_stack([x**k for k in range(degree + 1)] + [shape])
    start = np.linalg.lstsq(design, template, rcond=None)[0]

    def nll(params):
        expected = design @ params
        if np.any(expected <= 0):
            return 1e30
        return float(np.sum(expected - template * np.log(expected)))

    def gradient(params):
        return design.T @ (1.0 - template / (design @ params))

    found = scipy.optimize.minimize(nll, start, jac=gradient, method="BFGS", options={"gtol": 1e-10})
    return found.x[-1]


def test_the_spurious_signal_on_the_continuum_template_equals_a_direct_fit(generated, model):
    _, templates, _ = generated
    _, signal, spurious, template = model
    edges = templates.edges
    inside = slice(5, 55)  # bin centres in 105-155 GeV, the default window
    for point in spurious.points[::4]:
        shape = hyy_model.shift_template(signal.nominal, edges, point.mass - 125.0) / signal.nominal.sum()
        direct = _direct_fit(template[inside], edges[5:56], shape[inside], 3)
        assert point.signal == pytest.approx(direct, abs=1e-5 * point.signal_unc)
    assert spurious.value == max(abs(point.signal) for point in spurious.points)
    assert spurious.mass in MASSES and spurious.degree == 3
    assert spurious.relative_to_signal == pytest.approx(spurious.value / signal.nominal.sum())
    assert spurious.passes == (spurious.relative_to_signal < 0.1 or spurious.relative_to_uncertainty < 0.2)
    assert 0 < spurious.mc_unc < spurious.sigma_bkg  # 60k simulated continuum events against ~15k in the data
    # The relaxed criteria: each |S| less twice its simulation-statistics uncertainty.
    assert spurious.zeta == pytest.approx(max(max(abs(p.signal) - 2 * p.mc_unc, 0.0) for p in spurious.points))
    assert spurious.zeta <= spurious.value and (spurious.passes_relaxed or not spurious.passes)


def test_a_polynomial_template_has_no_spurious_signal():
    edges = np.linspace(100.0, 160.0, 61)
    centers = 0.5 * (edges[1:] + edges[:-1])
    template = 1000.0 - 8.0 * (centers - 100.0) + 0.03 * (centers - 100.0) ** 2
    signal = 50.0 * hyy_model.shift_template(np.exp(-0.5 * ((centers - 125.0) / 1.7) ** 2), edges, 0.0)
    found = hyy_model.spurious_signal(template, edges, signal, degree=2, masses=[122.0, 125.0, 128.0],
                                      signal_mass=125.0, window=None)
    assert found.value < 1e-3 * found.sigma_bkg and found.passes
    with pytest.raises(HistogramError):
        hyy_model.spurious_signal(template, edges, signal, degree=2, masses=[125.0], signal_mass=125.0,
                                  window=(130.0, 130.5))


def test_shift_template_moves_a_peak_and_keeps_its_yield():
    edges = np.linspace(100.0, 160.0, 61)
    centers = 0.5 * (edges[1:] + edges[:-1])
    peak = np.exp(-0.5 * ((centers - 125.0) / 1.7) ** 2)
    moved = hyy_model.shift_template(peak, edges, 2.5)
    assert moved.sum() == pytest.approx(peak.sum(), rel=1e-12)
    assert np.average(centers, weights=moved) == pytest.approx(127.5, abs=0.01)
    assert hyy_model.shift_template(peak, edges, 0.0) == pytest.approx(peak)


def _bumped(bump):
    """A smooth (quadratic) template with ``bump`` signal events injected at 125 GeV, and the signal's shape."""
    edges = np.linspace(100.0, 160.0, 61)
    centers = 0.5 * (edges[1:] + edges[:-1])
    shape = np.exp(-0.5 * ((centers - 125.0) / 1.7) ** 2)
    shape /= shape.sum()
    return edges, 4000.0 - 30.0 * (centers - 100.0) + 0.2 * (centers - 100.0) ** 2 + bump * shape, shape


def _sigma_s(template, edges, shape):
    """Independent reference for the fitted signal's uncertainty where the fit is exact (prediction = template):
    the inverse Poisson Fisher information, with the polynomial in monomials of another variable."""
    x = (0.5 * (edges[1:] + edges[:-1]) - 130.0) / 30.0
    design = np.column_stack([np.ones_like(x), x, x**2, shape])
    return float(np.sqrt(np.linalg.inv(design.T @ (design / template[:, None]))[-1, -1]))


@pytest.mark.parametrize(
    ("ratio", "bumps", "taken"),
    [
        # The template's statistics dominate (its variance 4 times the data's, mc_unc = 2 sigma_bkg): the model
        # takes zeta, the part beyond 2 mc_unc: none of a bump of 1.5 mc_unc, 1 mc_unc of one of 3 mc_unc.
        (4.0, 1.5, "zeta"),
        (4.0, 3.0, "zeta"),
        # A template of 4 times the data's statistics (mc_unc = sigma_bkg / 2): S_spur, whatever zeta is.
        (0.25, 1.5, "S_spur"),
        (0.25, 3.0, "S_spur"),
    ],
)
def test_the_spurious_uncertainty_is_zeta_only_where_the_templates_statistics_dominate(ratio, bumps, taken):
    edges, smooth, shape = _bumped(0.0)
    sigma_bkg = _sigma_s(smooth, edges, shape)
    mc_unc = np.sqrt(ratio) * sigma_bkg  # the template's variance is ratio x the data's (Poisson) variance
    bump = bumps * mc_unc
    edges, template, shape = _bumped(bump)
    sigma_bkg, mc_unc = _sigma_s(template, edges, shape), np.sqrt(ratio) * _sigma_s(template, edges, shape)
    found = hyy_model.spurious_signal(template, edges, 100.0 * shape, degree=2, masses=[125.0], signal_mass=125.0,
                                      window=None, template_variance=ratio * template)
    assert found.value == pytest.approx(bump, rel=1e-6)  # the injected bump is S_spur
    assert found.sigma_bkg == pytest.approx(sigma_bkg, rel=1e-6) and found.mc_unc == pytest.approx(mc_unc, rel=1e-6)
    assert found.zeta == pytest.approx(max(bump - 2.0 * mc_unc, 0.0), abs=1e-6 * bump)
    assert found.uncertainty_from == taken and found.statistics_dominate == (taken == "zeta")
    assert found.uncertainty == (found.zeta if taken == "zeta" else found.value)
    assert found.explanation().startswith(f"the model takes {taken} = {found.uncertainty:.1f} events")
    record = found.record()
    assert record["uncertainty"] == found.uncertainty and record["explanation"] == found.explanation()


def test_without_the_templates_statistics_the_spurious_uncertainty_is_s_spur():
    edges, template, shape = _bumped(500.0)
    found = hyy_model.spurious_signal(template, edges, 100.0 * shape, degree=2, masses=[125.0], signal_mass=125.0,
                                      window=None)
    assert np.isnan(found.mc_unc) and not found.statistics_dominate
    assert found.uncertainty == found.value == pytest.approx(500.0, rel=1e-6) and found.uncertainty_from == "S_spur"


def test_the_figures_carry_the_label_the_fitted_mu_and_the_chosen_degree(generated, model, figures, tmp_path):
    truth, templates, _ = generated
    spec, _, spurious, _ = model
    result = hyy_model.fit_hyy_model(spec)
    hyy_model.plot_hyy_fit(spec, result, templates.edges, tmp_path / "fit", lumi=truth["lumi_fb"])
    hyy_model.plot_spurious_signal([spurious], spurious.degree, tmp_path / "spurious")
    fit_figure, spurious_figure = figures

    def texts(fig):
        return " ".join(text.get_text() for ax in fig.axes for text in ax.texts)

    assert f"{truth['lumi_fb']:g}" in texts(fit_figure) and "13 TeV" in texts(fit_figure)
    assert "Open Data" in texts(fit_figure) and "Simulation" in texts(spurious_figure)
    legend = [text.get_text() for text in fit_figure.axes[0].get_legend().get_texts()]
    assert any(f"{result.mu:.2f}" in entry for entry in legend)
    assert any(f"degree {spurious.degree}" in text.get_text()
               for text in spurious_figure.axes[0].get_legend().get_texts())
