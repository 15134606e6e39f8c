"""Background fits against toy truth: signal yield, goodness of fit, degree choice, the tutorial's failure mode."""

import numpy as np
import pytest
from _toys import CENTRES, EDGES, make_toy

from stats.background import fit_background, scan_degrees
from stats.errors import FitError, HistogramError

TRUE_YIELD = 1800.0


@pytest.fixture(scope="module")
def toy():
    return make_toy(seed=1, signal_yield=TRUE_YIELD)


@pytest.mark.parametrize("likelihood", ["chi2", "poisson"])
def test_robust_fit_recovers_the_injected_yield(toy, likelihood):
    fit = fit_background(toy.counts, toy.edges, mass=125.0, degree=4, likelihood=likelihood)
    assert fit.covariance_ok
    assert abs(fit.signal_yield - TRUE_YIELD) < 3 * fit.signal_yield_unc
    # The statistical error of a yield over ~1e5 events of continuum is ~100 events; a wrong one fails this.
    assert 60 < fit.signal_yield_unc < 200
    assert fit.ndf == 60 - 6
    assert 0.6 < fit.chi2_ndf < 1.6
    assert np.all(fit.background_unc > 0)
    # The fitted continuum is the truth within a few of its own uncertainties in (nearly) every bin.
    pulls = (fit.background - toy.background) / fit.background_unc
    assert np.mean(np.abs(pulls) < 3) > 0.9


def test_chi2_and_poisson_fits_agree(toy):
    chi2 = fit_background(toy.counts, toy.edges, likelihood="chi2")
    poisson = fit_background(toy.counts, toy.edges, likelihood="poisson")
    assert abs(chi2.signal_yield - poisson.signal_yield) < 0.3 * poisson.signal_yield_unc
    np.testing.assert_allclose(chi2.background, poisson.background, rtol=0.01)


def test_robust_fit_gives_negative_yield_for_a_deficit():
    toy = make_toy(seed=5, signal_yield=-1500.0)  # a dip: the tutorial's bounded amplitude would sit on zero
    fit = fit_background(toy.counts, toy.edges, mass=125.0)
    assert fit.covariance_ok and np.all(fit.background_unc > 0)
    assert abs(fit.signal_yield + 1500.0) < 3 * fit.signal_yield_unc


def test_tutorial_fit_without_uncertainties_fails_with_the_reason(toy):
    # Here lmfit's (verified) minimum has a parameter on its bound and no covariance: the notebook's shapesys
    # (eval_uncertainty) does not exist, so there is no tutorial fit, while the robust one is fine.
    with pytest.raises(FitError, match="no parameter uncertainties at 115.0 GeV"):
        fit_background(toy.counts, toy.edges, mass=115.0, method="tutorial")
    robust = fit_background(toy.counts, toy.edges, mass=115.0, method="robust")
    assert robust.covariance_ok and np.all(robust.background_unc > 0)


def test_tutorial_fit_at_the_peak_matches_truth(toy):
    fit = fit_background(toy.counts, toy.edges, mass=125.0, method="tutorial")
    assert fit.covariance_ok
    assert abs(fit.signal_yield - TRUE_YIELD) < 3 * fit.signal_yield_unc
    assert 1.0 < fit.sigma < 2.5
    assert fit.ndf == 60 - 7
    # The notebook's shapesys: the full model's uncertainty, positive in every bin.
    assert np.all(fit.background_unc > 0)


def test_degree_scan_chooses_the_true_degree():
    # Continuum that is exactly a cubic: degree 2 must be rejected by the F-test, 4 must bring nothing.
    x = (CENTRES - 130.0) / 30.0
    cubic = 2000.0 * (1.0 - 0.8 * x + 0.3 * x**2 - 0.35 * x**3)
    counts = np.random.default_rng(11).poisson(cubic).astype(float)
    scan = scan_degrees(counts, EDGES, degrees=range(2, 7))
    assert [row.degree for row in scan.rows] == [2, 3, 4, 5, 6]
    assert [row.ndf for row in scan.rows] == [56, 55, 54, 53, 52]
    assert scan.rows[1].f_p_value < 1e-6
    assert scan.best_degree == 3
    assert np.isnan(scan.rows[0].f_stat)


def test_bad_options_are_rejected(toy):
    with pytest.raises(HistogramError, match="outside the histogram range"):
        fit_background(toy.counts, toy.edges, mass=170.0)
    with pytest.raises(FitError, match="unknown method"):
        fit_background(toy.counts, toy.edges, method="magic")
    with pytest.raises(FitError, match="no degrees of freedom"):
        fit_background(toy.counts[:5], toy.edges[:6], mass=102.0, degree=3)
    with pytest.raises(FitError, match="consecutive"):
        scan_degrees(toy.counts, toy.edges, degrees=[2, 4])
    with pytest.raises(HistogramError, match="non-finite"):
        fit_background(np.full(60, np.nan), toy.edges)
