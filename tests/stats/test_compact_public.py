"""The compact engine on the modifiers and conventions of public HEPData likelihoods, against pyhf.

Two kinds of inputs:

* specifications written here, each reproducing what published likelihoods do (named where they were seen): a
  shapefactor shared by two channels, several normfactors, staterror and shapesys settings from the measurement,
  fixed parameters, a POI bounded at 1000, a code-4 normsys whose polynomial goes negative (negative yields), zero
  and negative yields, empty bins, a POI that is a shapesys parameter, patches that replace instead of add;
* public ATLAS likelihoods (HEPData background-only workspaces), read at test time from ``PUBLIC`` (the env variable
  ``OPENDATA_STATS_PUBLIC_LIKELIHOODS``, else ``../shared/data/public-likelihoods``) when present, skipped otherwise.
  The layout is that of the ``searches/`` folder of github.com/Rupt/interval-evidence (commit 63267fb3, MIT; each
  file there is a HEPData record's background-only workspace, gzipped, the record named in the folder's
  ``make_workspaces.sh``): ``PUBLIC/<analysis>/<file>.json.gz``. Workspaces without their POI get a signal sample.

For each: the compact expected data and log-likelihood equal pyhf's at mu = 0, 0.5, 1, 2 and at random nuisance
values; the compact hypotest's CLs equals pyhf's where pyhf's fits are at least as low (where they are not, the
compact minimum is the lower one); and where the compact path is not taken, the reason names the feature.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import pyhf
import pytest

pytest.importorskip("jax")

from stats.compact import Unsupported  # noqa: E402
from stats.compact import model as compactmodel  # noqa: E402
from stats.compact.engine import PatchEngine  # noqa: E402
from stats.compact.padding import shared_modifiers  # noqa: E402
from stats.errors import FitError  # noqa: E402
from stats.hypotest import FIT_NAMES, pyhf_hypotest  # noqa: E402
from stats.likelihoods import HypotestSettings, patched_model  # noqa: E402

PUBLIC = Path(os.environ.get("OPENDATA_STATS_PUBLIC_LIKELIHOODS")
              or Path(__file__).resolve().parents[3] / "shared" / "data" / "public-likelihoods")
CODE4 = {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}
CODES = {"code4/code4p": CODE4, "pyhf defaults": {}}
AS_PUBLISHED = {"metadata": {"name": "as_published", "values": [0]}, "patch": []}


def workspace(channels: list, observations: dict, parameters: list, poi: str = "mu") -> dict:
    return {"channels": channels, "observations": [{"name": k, "data": v} for k, v in observations.items()],
            "measurements": [{"name": "meas", "config": {"poi": poi, "parameters": parameters}}], "version": "1.0.0"}


def sample(name: str, data: list, *modifiers: tuple) -> dict:
    return {"name": name, "data": data,
            "modifiers": [{"name": m[0], "type": m[1], "data": m[2] if len(m) > 2 else None} for m in modifiers]}


def shared_shapefactor() -> dict:
    """A data-driven background: one shapefactor in SR and CR (pyhf shares it bin by bin, as HistFitter's
    DataDriven example does), a second one in a 3-bin VR, and two normfactors besides the POI."""
    jes = ("jes", "normsys", {"hi": 1.06, "lo": 0.95})
    return workspace([
        {"name": "SR", "samples": [
            sample("signal", [6.0, 11.0], ("mu", "normfactor"), ("lumi", "lumi")),
            sample("ttbar", [30.0, 20.0], ("mu_ttbar", "normfactor"), ("lumi", "lumi"), jes),
            sample("wjets", [12.0, 9.0], ("sf_w", "shapefactor"), ("stat_SR", "staterror", [1.5, 1.2]))]},
        {"name": "CR", "samples": [
            sample("ttbar", [100.0, 80.0], ("mu_ttbar", "normfactor"), ("lumi", "lumi"), jes),
            sample("wjets", [150.0, 120.0], ("sf_w", "shapefactor"))]},
        {"name": "VR", "samples": [
            sample("ttbar", [15.0, 10.0, 5.0], ("mu_ttbar", "normfactor"), ("lumi", "lumi"), jes),
            sample("fakes", [4.0, 3.0, 2.0], ("sf_fakes", "shapefactor"))]},
    ], {"SR": [52.0, 39.0], "CR": [262.0, 196.0], "VR": [21.0, 12.0, 9.0]},
        [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.915, 1.085]], "inits": [1.0]},
         {"name": "mu", "bounds": [[0.0, 10.0]], "inits": [1.0]}])


def measurement_settings() -> dict:
    """What HistFitter measurements set: a fixed luminosity and a fixed nuisance parameter away from 0, a POI bounded
    at 1000 (discovery workspaces), staterror widths and a shapesys's factors given by the measurement, a staterror
    spanning two channels, an empty bin (fixed gamma), a zero-content sample and a negative histosys variation."""
    stat = ("stat", "staterror")
    return workspace([
        {"name": "SR", "samples": [
            sample("signal", [4.0, 6.0, 0.0], ("mu", "normfactor"), ("lumi", "lumi"),
                   ("theory", "normsys", {"hi": 1.15, "lo": 0.8})),
            sample("bkg", [40.0, 25.0, 0.0], ("lumi", "lumi"), (*stat, [2.0, 1.8, 0.0]),
                   ("jes", "histosys", {"hi_data": [43.0, 27.5, 0.0], "lo_data": [38.0, 22.0, 0.0]}),
                   ("bkg_shape", "shapesys", [4.0, 3.0, 0.0])),
            sample("empty", [0.0, 0.0, 0.0], ("lumi", "lumi"), ("jes", "normsys", {"hi": 1.1, "lo": 0.9}))]},
        {"name": "CR", "samples": [
            sample("bkg", [200.0, 3.0], ("lumi", "lumi"), (*stat, [6.0, 1.5]),
                   ("jes", "histosys", {"hi_data": [210.0, 4.0], "lo_data": [190.0, -0.5]}))]},
    ], {"SR": [47.0, 29.0, 0.0], "CR": [207.0, 2.0]},
        [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.915, 1.085]], "inits": [1.0],
          "fixed": True},
         {"name": "mu", "bounds": [[0.0, 1000.0]], "inits": [1.0]},
         {"name": "theory", "fixed": True, "inits": [0.5]},
         {"name": "stat", "sigmas": [0.06, 0.08, 0.5, 0.04, 0.3]},
         {"name": "bkg_shape", "factors": [90.0, 60.0, 1.0], "auxdata": [90.0, 60.0, 1.0]}])


def negative_code4_factor() -> dict:
    """A normsys of hi = 40, lo = 0.01 (ATLAS SUSY 2hadtau's Top sample): pyhf's code-4 polynomial inside |alpha| < 1
    is negative near alpha = -0.43, and so are the yields there (pyhf's log-likelihood is NaN, the compact one too)."""
    return workspace([
        {"name": "SR", "samples": [
            sample("signal", [5.0, 3.0], ("mu", "normfactor")),
            sample("top", [12.0, 1.0], ("top_syst", "normsys", {"hi": 40.0, "lo": 0.01}),
                   ("stat_SR", "staterror", [1.5, 0.4])),
            sample("other", [4.0, 12.0], ("top_syst", "normsys", {"hi": 1.02, "lo": 0.97}),
                   ("stat_SR", "staterror", [0.6, 0.8]))]},
    ], {"SR": [20.0, 15.0]}, [{"name": "mu", "bounds": [[0.0, 10.0]], "inits": [1.0]}])


def shapesys_poi() -> dict:
    """As in pyhf's issue 1720: the POI is a shapesys parameter, and a sample carries no modifier."""
    return workspace([{"name": "channel", "samples": [
        sample("signal", [4.0]), sample("bkg", [2.0], ("NP", "shapesys", [1.2]))]}], {"channel": [1.0]}, [], poi="NP")


def two_minima() -> dict:
    """With piecewise-linear histosys (code 0) and a bin whose both variations lie below its nominal (bkgB's second
    bin), the profile likelihood has a minimum on each side of alpha = 0: -2lnL 31.45 at alpha = -0.4 and 29.68 at
    alpha = +0.55 (pyhf's validation example 2bin_2channel_coupledhistosys is of this kind)."""
    shared = "shared_jes"
    return workspace([
        {"name": "SR", "samples": [
            sample("signal", [25.0, 40.0], ("mu", "normfactor")),
            sample("bkgA", [90.0, 110.0], (shared, "histosys", {"lo_data": [82.0, 99.0], "hi_data": [99.0, 120.0]})),
            sample("bkgB", [60.0, 130.0], (shared, "histosys", {"lo_data": [54.0, 50.0], "hi_data": [66.0, 62.0]}))]},
        {"name": "CR", "samples": [
            sample("bkgC", [120.0, 95.0], (shared, "histosys", {"lo_data": [111.0, 86.0], "hi_data": [126.0, 104.0]}))]},
    ], {"SR": [180.0, 240.0], "CR": [126.0, 99.0]}, [{"name": "mu", "bounds": [[0.0, 10.0]]}])


# --- checks ---------------------------------------------------------------------------------------------------


def compact_of(spec: dict, settings: dict):
    """pyhf's numpy model of ``spec``, its data, and the compact structure and numbers of the same specification."""
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    model = ws.model(modifier_settings=settings)
    structure = compactmodel.build_structure(model.spec["channels"], model.config, settings)
    defaults = compactmodel.parameter_defaults(model.config, model.spec["parameters"])
    numbers = compactmodel.build_numbers(structure, model.spec["channels"],
                                         {o["name"]: o["data"] for o in spec["observations"]}, defaults)
    return model, ws.data(model), structure, numbers


def parameter_points(model, seed: int = 11) -> list[np.ndarray]:
    """pyhf's initial values with the POI at 0, 0.5, 1 and 2, then three points with random free nuisance values."""
    config = model.config
    init = np.asarray(config.suggested_init(), dtype=float)
    bounds = np.asarray(config.suggested_bounds(), dtype=float)
    free = ~np.asarray(config.suggested_fixed(), dtype=bool)
    free[config.poi_index] = False
    points = []
    for mu in (0.0, 0.5, 1.0, 2.0):
        point = init.copy()
        point[config.poi_index] = mu
        points.append(point)
    rng = np.random.default_rng(seed)
    for scale in (0.3, 0.8, 1.5):
        shift = np.where(free, rng.normal(0.0, scale, init.size) * np.minimum(1.0, (bounds[:, 1] - bounds[:, 0]) / 4),
                         0.0)
        point = np.clip(init + shift, bounds[:, 0], bounds[:, 1])
        point[config.poi_index] = rng.uniform(0.0, 2.0)
        points.append(point)
    return points


def assert_same_likelihood(spec: dict, settings: dict) -> None:
    """Compact expected data and log-likelihood equal pyhf's at :func:`parameter_points` (both NaN where a yield is
    negative), and :func:`~stats.compact.model.verify` accepts the compact model."""
    import jax.numpy as jnp

    model, data, structure, numbers = compact_of(spec, settings)
    assert compactmodel.verify(structure, numbers, model, data) is None
    tensors = compactmodel.Numbers(*(jnp.asarray(field) for field in numbers))
    expected_fn, logpdf_fn = compactmodel.evaluators(structure)
    order = compactmodel._pyhf_data_order(structure, model.config)
    poisson = np.r_[np.arange(structure.nbins), structure.nbins + structure.gauss_par.size
                    + np.arange(structure.poisson_par.size)]
    finite = 0
    for point in parameter_points(model):
        mine_expected = np.asarray(expected_fn(tensors, jnp.asarray(point)))
        np.testing.assert_allclose(mine_expected[order], model.expected_data(point), rtol=1e-10, atol=1e-12,
                                   equal_nan=True)
        mine = float(logpdf_fn(tensors, jnp.asarray(point), tensors.data))
        theirs = float(model.logpdf(point, data)[0])
        if not math.isfinite(theirs):  # a negative yield (NaN), or none where events are seen (-inf)
            assert mine == theirs or math.isnan(mine) and math.isnan(theirs), (point, mine, theirs)
            continue
        # pyhf's own rounding grows with the size of its Poisson terms (see compactmodel.verify).
        rounding = 16 * np.finfo(float).eps * compactmodel._rounding_scale(mine_expected, numbers.data, poisson)
        assert abs(mine - theirs) <= 1e-9 + 1e-10 * abs(theirs) + rounding, (point, mine, theirs)
        finite += 1
    assert finite >= 4


def agrees(value: float, reference: float) -> bool:
    return abs(value - reference) <= max(1e-4, 1e-3 * abs(reference))


def pyhf_default_fits(model, data, mu: float) -> dict[str, float]:
    """-2lnL of the five fits of pyhf's hypotest, as pyhf runs them (default scipy optimizer)."""
    _, free = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    _, conditional = pyhf.infer.mle.fixed_poi_fit(mu, data, model, return_fitted_val=True)
    background, value = pyhf.infer.mle.fixed_poi_fit(0.0, data, model, return_fitted_val=True)
    asimov = model.expected_data(background)
    _, asimov_free = pyhf.infer.mle.fit(asimov, model, return_fitted_val=True)
    _, asimov_conditional = pyhf.infer.mle.fixed_poi_fit(mu, asimov, model, return_fitted_val=True)
    return dict(zip(FIT_NAMES, map(float, (free, conditional, value, asimov_free, asimov_conditional))))


def assert_recorded_parameters_give_recorded_minima(model, data, fits: dict) -> None:
    """Where a fit records its parameters (a lowered fit, and then the background-only fit that made the Asimov
    data), pyhf's likelihood there is the recorded -2lnL: on the Asimov data, pyhf's expected data at the recorded
    background-only parameters."""
    names = model.config.par_names
    for name, record in fits.items():
        if record.parameters is None:
            continue
        on = data
        if name.startswith("asimov"):
            background = fits["background"].parameters
            assert background is not None, name
            on = model.expected_data([background[n] for n in names])
        value = -2 * float(model.logpdf([record.parameters[n] for n in names], on)[0])
        assert value == pytest.approx(record.twice_nll, abs=1e-6, rel=1e-9), (name, value, record.twice_nll)


def assert_hypotest_agrees(bkg: dict, patches: list[dict], settings: HypotestSettings,
                           reference_backend: str = "numpy") -> list[str]:
    """The engine takes the compact path for every patch; no compact fit ends above pyhf's default one; the CLs
    equals pyhf's hypotest where none ends below it either. Returns which case each patch was: "equal", or which
    compact fits are the lower. pyhf runs on ``reference_backend`` (its jax gradients: numpy takes minutes for the
    five fits of a 33-channel likelihood)."""
    engine = PatchEngine(bkg, settings, shared_modifiers(bkg, patches))
    outcomes = []
    for patch in patches:
        got = engine.run(patch)
        assert got.method == "compact" and engine.fallbacks == {}, engine.fallbacks
        pyhf.set_backend(reference_backend)
        model, data = patched_model(bkg, patch, settings)
        obs, exp = pyhf.infer.hypotest(settings.mu, data, model, test_stat=settings.test_stat,
                                       return_expected_set=True)
        theirs = pyhf_default_fits(model, data, settings.mu)
        assert_recorded_parameters_give_recorded_minima(model, data, got.fits)
        lower = [name for name in FIT_NAMES if got.fits[name].twice_nll < theirs[name] - 1e-3]
        assert all(got.fits[name].twice_nll < theirs[name] + 1e-3 for name in FIT_NAMES), (got.fits, theirs)
        if not lower:
            assert agrees(got.CLs_obs, float(obs)), (got.CLs_obs, float(obs))
            assert all(agrees(a, float(b)) for a, b in zip(got.CLs_exp, exp)), (got.CLs_exp, exp)
        outcomes.append("compact lower: " + ", ".join(lower) if lower else "equal")
    return outcomes


# --- the specifications written here ---------------------------------------------------------------------------


SPECS = {"shared shapefactor": shared_shapefactor, "measurement settings": measurement_settings,
         "negative code-4 factor": negative_code4_factor, "shapesys POI": shapesys_poi, "two minima": two_minima}


@pytest.mark.parametrize("codes", list(CODES))
@pytest.mark.parametrize("name", list(SPECS))
def test_compact_likelihood_equals_pyhf(name, codes):
    assert_same_likelihood(SPECS[name](), CODES[codes])


def test_negative_code4_factor_gives_pyhf_negative_yields():
    """The code-4 polynomial's negative values reach the yields unchanged (no log of the factor: that was NaN)."""
    import jax.numpy as jnp

    model, _, structure, numbers = compact_of(negative_code4_factor(), CODE4)
    point = np.asarray(model.config.suggested_init(), dtype=float)
    point[model.config.par_slice("top_syst").start] = -0.43
    point[model.config.poi_index] = 0.0
    mine = np.asarray(compactmodel.expected_main(structure, compactmodel.Numbers(*map(jnp.asarray, numbers)),
                                                 jnp.asarray(point)))
    np.testing.assert_allclose(mine, model.expected_actualdata(point), rtol=1e-12)
    assert mine.min() < 0


def test_measurement_settings_stand_for_staterror_and_shapesys():
    model, _, structure, numbers = compact_of(measurement_settings(), CODE4)
    stat = model.config.par_slice("stat")
    assert np.array_equal(numbers.gauss_sigma[np.isin(structure.gauss_par, range(stat.start, stat.stop))],
                          [0.06, 0.08, 0.5, 0.04, 0.3])
    shape = model.config.par_slice("bkg_shape")
    assert np.array_equal(numbers.poisson_tau[np.isin(structure.poisson_par, range(shape.start, shape.stop))],
                          [90.0, 60.0, 1.0])
    theory = model.config.par_slice("theory").start
    assert numbers.fixed[theory] and numbers.init[theory] == 0.5


@pytest.mark.slow
def test_shared_shapefactor_hypotest_and_a_patch_that_replaces():
    """The shared shapefactor takes the compact path with pyhf's CLs; so does a patch of replace operations (pyhf's
    example patchset changes a normsys's hi and lo), which the engine applies to a copy of the channels."""
    replace = {"metadata": {"name": "jes_1p2", "values": [1.2]}, "patch": [
        {"op": "replace", "path": "/channels/0/samples/1/modifiers/2/data/hi", "value": 1.2},
        {"op": "replace", "path": "/channels/0/samples/1/modifiers/2/data/lo", "value": 0.8}]}
    assert assert_hypotest_agrees(shared_shapefactor(), [AS_PUBLISHED, replace], HypotestSettings(backend="jax")) \
        == ["equal", "equal"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["measurement settings", "negative code-4 factor"])
@pytest.mark.parametrize("test_stat", ["qtilde", "q"])
def test_written_specs_hypotest(name, test_stat):
    settings = HypotestSettings(backend="jax", test_stat=test_stat)
    assert assert_hypotest_agrees(SPECS[name](), [AS_PUBLISHED], settings) == ["equal"]


@pytest.mark.slow
def test_two_minima_code0():
    """The free fit from pyhf's start stops in the higher valley (alpha < 0); its mirror image finds the lower one
    that pyhf's fit finds. pyhf's default Asimov conditional fit stops early (-2lnL 36.06, Minuit 31.67), so its CLs
    (0.317) is not the reference: pyhf's model with the verified fits gives the compact path's CLs."""
    settings = HypotestSettings(backend="jax", test_stat="q", normsys="code1", histosys="code0")
    bkg = two_minima()
    assert assert_hypotest_agrees(bkg, [AS_PUBLISHED], settings) == ["compact lower: asimov_conditional"]
    got = PatchEngine(bkg, settings).run(AS_PUBLISHED)
    assert got.fits["free"].first_twice_nll > got.fits["free"].twice_nll + 1.0  # the start's valley, left behind
    assert got.fits["free"].twice_nll == pytest.approx(29.679006, abs=1e-5)
    model, data = patched_model(bkg, AS_PUBLISHED, settings)
    verified = pyhf_hypotest(model, data, mu=settings.mu, test_stat=settings.test_stat)
    assert agrees(got.CLs_obs, verified.CLs_obs) and verified.CLs_obs == pytest.approx(0.358107, abs=1e-5)
    assert all(agrees(a, b) for a, b in zip(got.CLs_exp, verified.CLs_exp))


# --- fallbacks name the feature -----------------------------------------------------------------------------------


def fallback_reason(bkg: dict, patch: dict, settings: HypotestSettings) -> str:
    engine = PatchEngine(bkg, settings, shared_modifiers(bkg, [patch]))
    try:
        got = engine.run(patch)
        assert got.method == "pyhf" and got.fallback == engine.fallbacks[patch["metadata"]["name"]]
    except FitError:
        pass  # pyhf refuses the point too; the reason is recorded all the same
    return engine.fallbacks[patch["metadata"]["name"]]


def test_fallbacks_name_the_feature():
    jax = HypotestSettings(backend="jax")
    spec = negative_code4_factor()
    zero = copy.deepcopy(spec)
    zero["channels"][0]["samples"][2]["modifiers"][0]["data"]["lo"] = 0.0
    assert fallback_reason(zero, AS_PUBLISHED, jax).startswith("normsys 'top_syst' with a factor <= 0")
    assert fallback_reason(spec, AS_PUBLISHED, jax._replace(histosys="code2")) == \
        "histosys interpolation code2 is not implemented in the compact model"
    assert fallback_reason(spec, AS_PUBLISHED, jax._replace(test_stat="q0")) == "test statistic q0"
    observed = {"metadata": {"name": "unblinded", "values": [1]},
                "patch": [{"op": "replace", "path": "/observations/0/data", "value": [30.0, 15.0]}]}
    assert fallback_reason(spec, observed, jax).startswith("the patch changes /observations/0/data")
    bounded = copy.deepcopy(spec)
    bounded["measurements"][0]["config"]["parameters"][0]["bounds"] = [[0.2, 1.5]]
    assert fallback_reason(bounded, AS_PUBLISHED, jax).startswith("the POI's bounds [0.2, 1.5] exclude 0")


@pytest.mark.slow  # about 3 s on 2 cores
def test_a_patchs_refusal_is_not_the_structures():
    """A patch whose normsys factor is 0 goes to pyhf; the next patch of the same structure takes the compact path
    (the refusal is of that patch's numbers, not of the structure)."""
    spec = negative_code4_factor()
    path = "/channels/0/samples/1/modifiers/0/data/lo"
    zero = {"metadata": {"name": "zero", "values": [0]}, "patch": [{"op": "replace", "path": path, "value": 0.0}]}
    small = {"metadata": {"name": "small", "values": [1]}, "patch": [{"op": "replace", "path": path, "value": 0.02}]}
    engine = PatchEngine(spec, HypotestSettings(backend="jax"), shared_modifiers(spec, [zero, small]))
    with pytest.raises(FitError):  # pyhf's fits of that patch meet NaN yields too
        engine.run(zero)
    assert engine.fallbacks["zero"].startswith("normsys 'top_syst' with a factor <= 0")
    assert engine.run(small).method == "compact" and "small" not in engine.fallbacks


def test_unsupported_layouts_name_the_feature():
    spec = shared_shapefactor()
    spec["channels"][2]["samples"][1]["modifiers"][0]["name"] = "sf_w"  # 3 bins; sf_w has 2 (from CR)
    model = pyhf.Workspace(spec).model()
    with pytest.raises(Unsupported, match="shapefactor 'sf_w' spans channels of different bin counts"):
        compactmodel.build_structure(model.spec["channels"], model.config, {})


# --- public likelihoods ------------------------------------------------------------------------------------------

#: Public ATLAS background-only workspaces (their HEPData record) and what they exercise.
PUBLIC_CASES = {
    "atlas_susy_DVmuon_2020/srmet_bkg.json.gz": "hepdata.91760: shapesys and staterror on one bin, POI bounds [0, 1000]",
    "atlas_susy_3Lss_2019/rpc3lss1b_bkg.json.gz": "hepdata.91214: one bin, 25 histosys, 20 normsys",
    "atlas_susy_2Ljets_2022/str_src_12_31_bkg.json.gz": "hepdata.116034: discovery workspace, POI bounds [0, 1000]",
    "atlas_susy_jets_2021/SR6j-3400_bkg.json.gz": "hepdata.95664: fixed lumi and alpha_SigXSec, 4 normfactors",
    "atlas_susy_3LRJmimic_2020/bkg.json.gz": "hepdata.91127: shapesys; pyhf's default fit stops early",
    "atlas_susy_2hadtau_2020/low_mass_bkg.json.gz": "hepdata.92006: code-4 normsys polynomials below 0",
    "atlas_susy_hb_2019/a_bkg.json.gz": "hepdata.89408 (sbottom RegionA): 3-bin channels, empty bins",
    "atlas_susy_compressed_2020/sleptons_bkg.json.gz": "hepdata.91374: 38 channels, shapesys, negative code-4",
    "atlas_susy_3L_2021/offshell_bkg.json.gz": "hepdata.95751: 33 channels, negative histosys yields, shapesys",
    "atlas_susy_1Ljets_2021/bkg.json.gz": "hepdata.97041: 46 bins, 321 empty sample bins",
}
#: In the default run: the small ones; the others (and every public hypotest) with -m slow.
SMALL = ["atlas_susy_DVmuon_2020/srmet_bkg.json.gz", "atlas_susy_3Lss_2019/rpc3lss1b_bkg.json.gz",
         "atlas_susy_2Ljets_2022/str_src_12_31_bkg.json.gz", "atlas_susy_2hadtau_2020/low_mass_bkg.json.gz"]


def public(name: str) -> dict:
    path = PUBLIC / name
    if not path.exists():
        pytest.skip(f"public likelihood {name} absent (set OPENDATA_STATS_PUBLIC_LIKELIHOODS)")
    with gzip.open(path) as stream:
        return json.load(stream)


def has_poi(spec: dict) -> bool:
    poi = spec["measurements"][0]["config"]["poi"]
    return any(m["name"] == poi for c in spec["channels"] for s in c["samples"] for m in s["modifiers"])


def signal_patch(spec: dict) -> dict:
    """A signal in every channel named SR* (else the first): 30 % of the background, the POI, lumi, a normsys."""
    poi = spec["measurements"][0]["config"]["poi"]
    lumi = any(m["type"] == "lumi" for c in spec["channels"] for s in c["samples"] for m in s["modifiers"])
    where = [i for i, c in enumerate(spec["channels"]) if "SR" in c["name"].upper()] or [0]
    operations = []
    for i in where:
        total = np.sum([s["data"] for s in spec["channels"][i]["samples"]], axis=0)
        modifiers = [(poi, "normfactor"), *([("lumi", "lumi")] if lumi else []),
                     ("signal_theory", "normsys", {"hi": 1.1, "lo": 0.88})]
        operations.append({"op": "add", "path": f"/channels/{i}/samples/0",
                           "value": sample("signal", [max(0.5, 0.3 * float(t)) for t in total], *modifiers)})
    return {"metadata": {"name": "signal", "values": [0]}, "patch": operations}


def public_case(name: str) -> tuple[dict, dict]:
    bkg = public(name)
    return bkg, (AS_PUBLISHED if has_poi(bkg) else signal_patch(bkg))


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in SMALL else [pytest.mark.slow])
                                  for n in PUBLIC_CASES])
def test_public_likelihood_equals_pyhf(name):
    bkg, patch = public_case(name)
    spec = pyhf.patchset.Patch(patch).apply(bkg) if patch["patch"] else bkg
    for settings in CODES.values():
        assert_same_likelihood(spec, settings)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLIC_CASES))
def test_public_likelihood_hypotest(name):
    bkg, patch = public_case(name)
    [outcome] = assert_hypotest_agrees(bkg, [patch], HypotestSettings(backend="jax"), reference_backend="jax")
    if name == "atlas_susy_3LRJmimic_2020/bkg.json.gz":
        # pyhf's default fits stop early (59 above the free minimum)
        assert outcome == "compact lower: " + ", ".join(FIT_NAMES)
