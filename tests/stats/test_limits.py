"""95 % CL CLs upper limits (stats.limits) against pyhf's upper_limit and cabinetry's fit.limit; limits that are
not bracketed, failed hypotests, and the plain-data round trip."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pyhf
import pytest

from stats.errors import FitError
from stats.limits import (CURVES, LimitPoint, UpperLimits, engine_hypotest, limits_from_dict, limits_to_dict,
                          poi_bounds, pyhf_upper_limits, upper_limits)
from stats.likelihoods import HypotestSettings, patched_model, switch_backend
from tests.stats.test_hepdata import SIGNALS, TARBALL, small_bkg_only, small_patchset

needs_1lbb = pytest.mark.skipif(not TARBALL.exists(), reason="shared 1Lbb data absent")
THREE_L = TARBALL.parent / "3L-eRJR-dev"
needs_3l = pytest.mark.skipif(not (THREE_L / "BkgOnly.json").exists(), reason="shared 3L data absent")
#: Relative agreement with the references where the fits agree.
AGREE = 1e-3


def doc_model():
    """pyhf's documentation example (its upper_limit docstring: observed 1.0116)."""
    pyhf.set_backend("numpy")
    model = pyhf.simplemodels.uncorrelated_background(signal=[12.0, 11.0], bkg=[50.0, 52.0],
                                                      bkg_uncertainty=[3.0, 7.0])
    return model, [51.0, 48.0] + model.config.auxdata


@functools.lru_cache(maxsize=None)
def doc_limits(bounds: tuple[float, float] | None = None) -> UpperLimits:
    """The verified limits of the documentation example (computed once per bounds for the module's tests)."""
    model, data = doc_model()
    return pyhf_upper_limits(model, data, bounds=bounds)


def three_bin_model():
    """Three bins, a weak signal: the limits lie above mu = 1."""
    pyhf.set_backend("numpy")
    model = pyhf.simplemodels.uncorrelated_background(signal=[3.0, 5.0, 2.0], bkg=[30.0, 45.0, 20.0],
                                                      bkg_uncertainty=[4.0, 6.0, 3.0])
    return model, [33.0, 41.0, 22.0] + model.config.auxdata


def pyhf_toms748(model, data):
    """pyhf's own upper limits (toms748 root finding), tighter than its default rtol."""
    pyhf.set_backend("numpy")
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, test_stat="qtilde", rtol=1e-6)
    return [float(obs), *(float(v) for v in exp)]


def cabinetry_limits(model, data, backend: str = "numpy"):
    """cabinetry's limits (Brent's method with Minuit fits), to 1e-6 in the POI; ``model`` built under ``backend``."""
    cabinetry = pytest.importorskip("cabinetry")
    switch_backend(backend)
    try:
        result = cabinetry.fit.limit(model, data, poi_tolerance=1e-6)
    finally:
        switch_backend("numpy")
    return [float(result.observed_limit), *(float(v) for v in result.expected_limit)]


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def check_brackets(result: UpperLimits) -> None:
    """Each limit lies between two hypotests on either side of the level, at most 2 (atol + rtol mu) apart."""
    cls = {point.mu: (point.CLs_obs, *point.CLs_exp) for point in result.points}
    for index, limit in enumerate(result.limits):
        if limit.status != "ok":
            continue
        lo, hi = limit.bracket
        assert lo <= limit.value <= hi and hi - lo <= 2 * (1e-8 + 1e-4 * hi), (CURVES[index], limit)
        assert (lo == 0.0 or cls[lo][index] >= result.level) and cls[hi][index] < result.level


@pytest.mark.slow  # 3 s and more on 2 cores
@pytest.mark.parametrize("make", [doc_model, three_bin_model])
def test_limits_match_pyhf_upper_limit_and_cabinetry(make):
    model, data = make()
    got = doc_limits() if make is doc_model else pyhf_upper_limits(model, data)
    assert [limit.status for limit in got.limits] == ["ok"] * 6
    assert not got.failed and {point.method for point in got.points} == {"pyhf"}
    check_brackets(got)
    references = {"pyhf upper_limit (toms748)": pyhf_toms748(model, data),
                  "cabinetry fit.limit": cabinetry_limits(model, data)}
    for source, reference in references.items():
        for name, value, want in zip(CURVES, got.values, reference):
            assert relative(value, want) <= AGREE, (source, name, value, want)
    # Fewer hypotests than pyhf's root finding, which runs one curve after the other.
    assert len(got.points) <= 30
    if make is doc_model:
        assert got.observed.value == pytest.approx(1.0116, rel=1e-4)  # pyhf's documented value


def test_a_limit_above_the_poi_bound_is_not_bracketed_and_has_no_value():
    got = doc_limits((0.0, 0.9))  # observed 1.01, expected -2 and -1 sigma 0.56, 0.76
    statuses = [limit.status for limit in got.limits]
    assert statuses == ["not_bracketed", "ok", "ok", "not_bracketed", "not_bracketed", "not_bracketed"]
    assert got.observed.value is None and "upper bound 0.9" in got.observed.reason
    assert max(point.mu for point in got.points) == pytest.approx(0.9)
    unbounded = doc_limits()  # (checked against pyhf's and cabinetry's above)
    assert relative(got.expected[0].value, unbounded.expected[0].value) <= 1e-4
    assert relative(got.expected[1].value, unbounded.expected[1].value) <= 1e-4


def test_a_positive_lower_bound_already_excluded_is_not_bracketed():
    model, data = doc_model()
    got = pyhf_upper_limits(model, data, bounds=(0.7, 3.0))  # the -2 sigma limit (0.56) lies below 0.7
    assert got.expected[0].status == "not_bracketed" and "lower bound 0.7" in got.expected[0].reason
    assert got.observed.status == "ok" and got.observed.value == pytest.approx(1.0116, rel=1e-3)


def test_failed_hypotests_are_recorded_and_stepped_around():
    """Hypotests that fail between mu = 0.95 and 1.1 (where the observed limit lies) are recorded with their reason;
    the observed curve, which cannot be bracketed narrowly without them, is failed with those reasons; the other
    curves are found as without failures."""
    from stats.hypotest import pyhf_hypotest

    model, data = doc_model()

    def flaky(mu: float):
        if 0.95 < mu < 1.1:
            raise FitError(f"conditional fit not at a minimum at {mu:.4f}")
        return pyhf_hypotest(model, data, mu=mu, test_stat="qtilde")

    got = upper_limits(flaky, bounds=(0.0, 10.0))
    clean = doc_limits()
    assert got.failed and all(0.95 < point.mu < 1.1 and point.CLs_obs is None for point in got.failed)
    assert all(point.error.startswith("FitError: conditional fit not at a minimum") for point in got.failed)
    assert got.observed.status == "failed" and "FitError" in got.observed.reason and got.observed.value is None
    lo, hi = got.observed.bracket
    assert lo <= clean.observed.value <= hi  # what is known is kept: the crossing lies in the bracket
    for limit, want in zip(got.expected, clean.expected):
        if limit.status == "ok":
            assert relative(limit.value, want.value) <= AGREE
    assert sum(limit.status == "ok" for limit in got.expected) >= 4  # only the median (1.06) is near the failures


def test_no_hypotest_gives_cls():
    def broken(mu: float):
        raise FitError("sqrt(q_mu,A) is zero")

    got = upper_limits(broken, bounds=(0.0, 5.0))
    assert all(limit.status == "failed" and "sqrt(q_mu,A) is zero" in limit.reason for limit in got.limits)
    assert got.points == () and len(got.failed) == 3


def test_plain_data_round_trip():
    got = doc_limits((0.0, 0.9))
    again = limits_from_dict(json.loads(json.dumps(limits_to_dict(got))))
    assert again == got
    assert isinstance(again.points[0], LimitPoint) and again.points[0].fits["free"].twice_nll > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        upper_limits(lambda mu: None, bounds=(0, 1), level=1.5)
    with pytest.raises(ValueError, match="upper bound"):
        upper_limits(lambda mu: None, bounds=(0, 0))


@pytest.mark.slow
def test_compact_engine_limits_match_pyhf_on_a_toy_patchset():
    """The compact PatchEngine of a toy patchset, one patch's limits against pyhf's upper_limit and cabinetry's on the
    same patched model."""
    pytest.importorskip("jax")
    from stats.compact.engine import PatchEngine
    from stats.compact.padding import shared_modifiers

    bkg = small_bkg_only()
    patches = small_patchset(bkg, SIGNALS)["patches"]
    engine = PatchEngine(bkg, HypotestSettings(backend="jax"), shared_modifiers(bkg, patches))
    spec = patches[1]
    got = upper_limits(engine_hypotest(engine, spec), bounds=poi_bounds(bkg, spec))
    assert [limit.status for limit in got.limits] == ["ok"] * 6
    assert {point.method for point in got.points} == {"compact"}
    check_brackets(got)
    pyhf.set_backend("numpy")
    model, data = patched_model(bkg, spec, HypotestSettings())
    for source, reference in (("pyhf", pyhf_toms748(model, data)), ("cabinetry", cabinetry_limits(model, data))):
        for name, value, want in zip(CURVES, got.values, reference):
            assert relative(value, want) <= AGREE, (source, name, value, want)


def lower_minima_explain(point: LimitPoint, model, data, backend: str = "numpy") -> bool:
    """pyhf's default fits at ``point.mu`` (free, and with the POI fixed there) reach a higher minimum than the
    verified ones: pyhf's CLs, and its limit, then rest on a fit that is not at the minimum."""
    switch_backend(backend)
    try:
        _, free = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
        _, conditional = pyhf.infer.mle.fixed_poi_fit(point.mu, data, model, return_fitted_val=True)
    finally:
        switch_backend("numpy")
    return (float(free) > point.fits["free"].twice_nll + 1e-4
            or float(conditional) > point.fits["conditional"].twice_nll + 1e-4)


def compare_with_reference(reference_name: str, reference: list[float], got: UpperLimits, model, data,
                           backend: str = "numpy") -> None:
    """Each limit agrees with the reference within :data:`AGREE`, or the reference's fits are worse: at the tested
    point nearest the limit, pyhf's default fits stop above the verified minimum (which is then the lower one)."""
    for name, limit, want in zip(CURVES, got.limits, reference):
        if limit.status == "not_bracketed":  # pyhf's search goes on past the POI's upper bound
            assert want > got.bounds[1] * (1 - AGREE), (reference_name, name, limit, want)
            continue
        assert limit.status == "ok", (name, limit)
        if relative(limit.value, want) <= AGREE:
            continue
        nearest = min(got.points, key=lambda point: abs(point.mu - limit.value))
        assert lower_minima_explain(nearest, model, data, backend), (reference_name, name, limit, want)


def compact_limits(source, name: str, backend: str = "numpy"):
    """One patch's limits through a compact engine of its patchset, and pyhf's model (built under ``backend``) and
    data of that patch."""
    from stats.compact.engine import PatchEngine
    from stats.compact.padding import shared_modifiers
    from stats.hepdata import load_likelihoods

    loaded = load_likelihoods(source)
    specs = [{"metadata": dict(p.metadata), "patch": list(p.patch)} for p in loaded.patchset.patches]
    spec = next(s for s in specs if s["metadata"]["name"] == name)
    engine = PatchEngine(loaded.bkg_only, HypotestSettings(backend="jax"), shared_modifiers(loaded.bkg_only, specs))
    got = upper_limits(engine_hypotest(engine, spec), bounds=poi_bounds(loaded.bkg_only, spec))
    switch_backend(backend)
    model, data = patched_model(loaded.bkg_only, spec, HypotestSettings())
    switch_backend("numpy")
    return got, model, data


#: pyhf's limits on a 1Lbb patch take about 45 hypotests: 6-15 min of CPU with pyhf's numpy backend, under a minute
#: with its jax backend (the published reference CLs agree within 2e-6 between the two).
LBB_BACKEND = "jax"


@needs_1lbb
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_1lbb_compact_limits_match_pyhf_upper_limit(monkeypatch):
    pytest.importorskip("jax")
    got, model, data = compact_limits(TARBALL, "C1N2_Wh_hbb_650_0", LBB_BACKEND)
    check_brackets(got)
    assert got.observed.value < 1.0  # CLs(mu = 1) is 0.017 in the published reference
    # pyhf 0.7.6's toms748 scan keys its cache by the POI values it derives from hypotest's CLs, which the jax
    # backend returns as (unhashable) jax arrays: its hypotest's output is handed on as numpy floats.
    from pyhf.infer.intervals import upper_limits as pyhf_limits

    hypotest = pyhf_limits.hypotest

    def numpy_hypotest(*args, **kwargs):
        observed, expected = hypotest(*args, **kwargs)
        return np.float64(observed), [np.float64(value) for value in expected]

    monkeypatch.setattr(pyhf_limits, "hypotest", numpy_hypotest)
    switch_backend(LBB_BACKEND)
    try:
        obs, exp = pyhf_limits.upper_limit(data, model, test_stat="qtilde")
    finally:
        switch_backend("numpy")
    compare_with_reference("pyhf", [float(obs), *(float(v) for v in exp)], got, model, data, LBB_BACKEND)


@needs_1lbb
@pytest.mark.slow
@pytest.mark.reference  # cabinetry's Minuit fits: about 30 min of CPU (cabinetry is compared on toys in CI)
@pytest.mark.timeout(3600)
def test_1lbb_compact_limits_match_cabinetry_limit():
    pytest.importorskip("jax")
    got, model, data = compact_limits(TARBALL, "C1N2_Wh_hbb_650_0", LBB_BACKEND)
    compare_with_reference("cabinetry", cabinetry_limits(model, data, LBB_BACKEND), got, model, data, LBB_BACKEND)


@needs_3l
@pytest.mark.slow
def test_3l_limits_where_pyhfs_fit_stops_early():
    """On the 3L likelihood pyhf's default fit stops next to its start (CLs 0.9995 at mu = 1 against 0.149): pyhf's
    limits differ where its fits stop above the verified minima (the verified minimum is the lower one)."""
    pytest.importorskip("jax")
    got, model, data = compact_limits(THREE_L, "ERJR_100p0_20p0")
    check_brackets(got)
    assert got.observed.value == pytest.approx(1.302, rel=1e-3)  # CLs(mu = 1) is 0.149: the limit lies above 1
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, test_stat="qtilde")
    reference = [float(obs), *(float(v) for v in exp)]
    assert any(relative(a, b) > AGREE for a, b in zip(got.values, reference))  # the premise: pyhf's limits are off
    compare_with_reference("pyhf", reference, got, model, data)


def test_expected_curves_share_one_sqrt_qmu_a():
    """The transform behind the search: each expected CLs is Phi(-(n + s)) / Phi(-n) of one s = sqrt(q_mu,A)."""
    from scipy.stats import norm

    from stats.hypotest import cls_values
    from stats.limits import BAND_N, band_sqrt_qa, observed_shift

    for q_obs, q_asimov in ((2.0, 5.0), (0.3, 9.0), (7.0, 4.0)):
        observed, expected = cls_values(q_obs, q_asimov, "qtilde")
        s = band_sqrt_qa(expected[2])
        assert s == pytest.approx(math.sqrt(q_asimov), rel=1e-9)
        for n, value in zip(BAND_N, expected):
            assert value == pytest.approx(norm.sf(n + s) / norm.sf(n), rel=1e-9)
        t = observed_shift(observed, s)
        assert norm.sf(t + s) / norm.sf(t) == pytest.approx(observed, rel=1e-5)
    assert np.isfinite(observed_shift(0.5, 0.0))


def test_brazil_plot_draws_every_curve_and_the_label(tmp_path, figures):
    from stats.limit_plots import plot_brazil

    real = doc_limits((0.0, 0.9))  # observed not bracketed: a gap
    masses = [110.0, 120.0, 130.0, 140.0]
    limits = [(0.3, 0.2, 0.25, 0.35, 0.5, 0.7), real, [0.8, 0.5, 0.6, 0.9, 1.3, 1.8], (2.5, 1.0, 1.4, 2.0, 2.9, 4.0)]
    plot_brazil(masses, limits, tmp_path / "brazil", xlabel=r"$m_H$ [GeV]", lumi=36.1)
    [fig] = figures
    ax = fig.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[:4] == [r"Expected $\pm 2\sigma$", r"Expected $\pm 1\sigma$", "Expected",
                          "Observed (1 without a limit)"]
    assert ax.get_yscale() == "linear"  # 0.2 to 4: a factor 20
    assert ax.get_xlabel() == r"$m_H$ [GeV]" and "upper limit" in ax.get_ylabel()
    texts = " ".join(text.get_text() for text in ax.texts)
    assert "ATLAS" in texts and "13 TeV" in texts and "36.1" in texts
    observed = ax.get_lines()[1].get_ydata()
    assert np.isnan(observed[1]) and observed[0] == 0.3
    plot_brazil(masses, [(v * 10 ** i for v in row) if i else row for i, row in enumerate(limits[:1] * 4)],
                tmp_path / "wide", xlabel="m [GeV]")
    assert figures[1].axes[0].get_yscale() == "log"


def test_brazil_plot_written_as_png_and_pdf(tmp_path):
    from stats.limit_plots import plot_brazil

    limits = [(1, 0.5, 0.7, 1, 1.4, 2), (2, 1, 1.4, 2, 2.8, 4)]
    paths = plot_brazil([1.0, 2.0], limits, tmp_path / "b", xlabel="x [GeV]")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    from stats.errors import StatsError

    with pytest.raises(StatsError, match="expected median"):
        plot_brazil([1.0], [(None,) * 6], tmp_path / "none", xlabel="x")


def test_cls_curve_shows_the_decades_near_the_level_and_counts_what_it_leaves_out(tmp_path, figures):
    """A mass scan whose CLs reach 1e-30: the axis stops at 1e-6, the observed points below are counted, a failed
    point is marked on the level line, and the label names the luminosity."""
    from stats.limit_plots import CLS_FLOOR, plot_cls_curve
    from stats.patchscan import PointResult

    masses = [110.0, 115.0, 120.0, 125.0, 130.0]
    observed = [1e-12, 1e-3, 0.02, 0.6, 1e-30]
    rows = [PointResult(f"mass_{m:g}", [m], o, [o / 100, o / 10, o, min(1.0, o * 10), min(1.0, o * 100)], "ok", None,
                        1.0) for m, o in zip(masses, observed)]
    rows.append(PointResult("mass_135", [135.0], None, None, "failed", "timeout after 5s", 5.0))
    plot_cls_curve(rows, tmp_path / "cls", xlabel=r"$m_H$ [GeV]", lumi=36.1)
    [fig] = figures
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] == pytest.approx(CLS_FLOOR)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "Observed (2 below 1e-06)" in legend and "Expected (2 below 1e-06)" in legend and "failed (1)" in legend and "CLs = 0.05" in legend
    failed = [line for line in ax.get_lines() if line.get_label() == "failed (1)"]
    assert list(failed[0].get_xdata()) == [135.0] and list(failed[0].get_ydata()) == [0.05]
    assert ax.get_xlabel() == r"$m_H$ [GeV]"
    texts = " ".join(text.get_text() for text in ax.texts)
    assert "36.1" in texts and "13 TeV" in texts
    shallow = [PointResult("a", [1.0], 0.2, [0.05, 0.1, 0.2, 0.4, 0.8], "ok", None, 1.0),
               PointResult("b", [2.0], 0.1, [0.02, 0.05, 0.1, 0.2, 0.4], "ok", None, 1.0)]
    plot_cls_curve(shallow, tmp_path / "shallow", xlabel="x")
    assert figures[1].axes[0].get_ylim()[0] == pytest.approx(0.02 / 3)  # no empty decades below the data


def test_exclusion_contour_lies_where_cls_crosses_the_level(tmp_path, figures):
    """CLs falling by a decade every 100 GeV of m1 (log-linear, as interpolated) crosses 0.05 at a known m1."""
    from stats.limit_plots import plot_exclusion_contour
    from stats.patchscan import PointResult

    def cls(m1: float, shift: float) -> float:
        return min(1.0, 10 ** (-(m1 - 300.0 - shift) / 100.0))

    rows = [PointResult(f"p_{m1}_{m2}", [m1, m2], cls(m1, 0), [cls(m1, s) for s in (-120, -60, 0, 60, 120)], "ok",
                        None, 1.0) for m1 in range(200, 1001, 50) for m2 in range(0, 401, 100)]
    rows.append(PointResult("p_bad", [600.0, 50.0], None, None, "failed", "timeout after 5s", 5.0))
    plot_exclusion_contour(rows, ["m1", "m2"], tmp_path / "contour", lumi=139)
    [fig] = figures
    ax = fig.axes[0]
    crossing = 300.0 + 100.0 * -math.log10(0.05)  # 430.1 GeV; the +-1 sigma ones 60 GeV either side
    paths = [path for collection in ax.collections for path in collection.get_paths() if len(path.vertices) > 1]
    assert any(np.allclose(path.vertices[:, 0], crossing, atol=0.05) for path in paths)  # observed = expected
    assert any(np.allclose([path.vertices[:, 0].min(), path.vertices[:, 0].max()], [crossing - 60, crossing + 60],
                           atol=0.05) for path in paths)  # the band
    assert ax.get_xlabel() == "m1 [GeV]" and ax.get_ylabel() == "m2 [GeV]"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "Failed points (1)" in legend and "Observed limit (CLs = 0.05)" in legend


def test_limit_map_from_a_limit_scan(tmp_path):
    from stats.limit_plots import plot_limit_map
    from stats.limit_scan import PatchLimits

    rows = [PatchLimits(f"p_{m1}_{m2}", [m1, m2], 10 ** ((m1 - 500) / 300), [10 ** ((m1 - 520) / 300)] * 5, "ok",
                        None, 1.0) for m1 in range(200, 1001, 100) for m2 in range(0, 301, 100)]
    rows.append(PatchLimits("p_far", [1100, 0], None, [None] * 5, "ok", None, 1.0))
    paths = plot_limit_map(rows, ["m1", "m2"], tmp_path / "map", lumi=139)
    assert all(p.stat().st_size > 0 for p in paths)


def test_a_failing_upper_bound_is_a_failure_not_a_missing_limit():
    """Where the hypotest at the POI's upper bound fails, a curve above the level below it has no known status: it
    is failed with the reason, not reported as beyond the bound."""
    from stats.hypotest import pyhf_hypotest

    model, data = doc_model()

    def flaky(mu: float):
        if mu >= 0.95:
            raise FitError("free fit: restarts keep lowering -2lnL")
        return pyhf_hypotest(model, data, mu=mu, test_stat="qtilde")

    got = upper_limits(flaky, bounds=(0.0, 1.0))  # observed limit 1.012: above the bound
    assert got.observed.status == "failed" and "restarts keep lowering" in got.observed.reason
    assert got.expected[0].status == got.expected[1].status == "ok"  # 0.56 and 0.76
    assert len(got.points) + len(got.failed) <= 30


@needs_1lbb
@pytest.mark.slow
def test_an_engine_keeps_a_patchs_mu_independent_fits_and_gives_fresh_results(monkeypatch):
    """Tested at several mu, a patch's free, background-only and Asimov free fits are done once (the search's
    hypotests then cost two fits each and a start of the background-only fit); every hypotest equals one with
    nothing kept, and where the kept background-only fit is not the lowest, it is done again."""
    pytest.importorskip("jax")
    from stats import hypotest as hypotest_module
    from stats.compact.engine import PatchEngine
    from stats.compact.padding import shared_modifiers
    from stats.hepdata import load_likelihoods

    loaded = load_likelihoods(TARBALL)
    spec = {"metadata": dict(loaded.patchset["C1N2_Wh_hbb_650_0"].metadata),
            "patch": list(loaded.patchset["C1N2_Wh_hbb_650_0"].patch)}
    engine = PatchEngine(loaded.bkg_only, HypotestSettings(backend="jax"), shared_modifiers(loaded.bkg_only, [spec]))
    test = engine_hypotest(engine, spec)
    fitted = []
    real = hypotest_module.lowest_minimum
    monkeypatch.setattr(hypotest_module, "lowest_minimum",
                        lambda name, *args, **kwargs: fitted.append(name) or real(name, *args, **kwargs))

    def fresh(mu: float):
        kept, engine._kept = engine._kept, ("", {})
        try:
            return test(mu)
        finally:
            engine._kept = kept

    def same(a, b) -> bool:
        return all(abs(x - y) <= 1e-6 * abs(y) + 1e-12 for x, y in zip([a.CLs_obs, *a.CLs_exp], [b.CLs_obs, *b.CLs_exp]))

    first = test(1.0)
    assert fitted == list(hypotest_module.FIT_NAMES)
    for mu in (0.4, 2.0):
        fitted.clear()
        got = test(mu)
        assert fitted == ["conditional", "asimov_conditional"]  # the kept fits are not redone
        assert same(got, fresh(mu)) and got.fits["free"] == first.fits["free"]
    # A kept background-only fit above the minimum that this mu's conditional fit leads to: done again.
    kept = engine._kept[1]
    (best, start), distance = kept["background"]
    kept["background"] = ((best._replace(twice_nll=best.twice_nll + 1.0), start), distance)
    fitted.clear()
    got = test(1.5)
    assert fitted == ["conditional", "background", "asimov_free", "asimov_conditional"]
    assert same(got, fresh(1.5)) and kept["background"][0][0].twice_nll == pytest.approx(best.twice_nll, abs=1e-6)
    other = {"metadata": dict(loaded.patchset["C1N2_Wh_hbb_300_150"].metadata),
             "patch": list(loaded.patchset["C1N2_Wh_hbb_300_150"].patch)}
    fitted.clear()
    engine_hypotest(engine, other)(1.0)
    assert fitted == list(hypotest_module.FIT_NAMES)  # another patch keeps nothing of this one's
