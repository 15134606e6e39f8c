"""The compact likelihood against pyhf's, and its fits and CLs against pyhf.infer.hypotest."""

from __future__ import annotations

import copy

import numpy as np
import pyhf
import pytest

pytest.importorskip("jax")

from stats.compact import Unsupported  # noqa: E402
from stats.compact import model as compactmodel  # noqa: E402
from stats.compact.hypotest import hypotest  # noqa: E402
from stats.compact.minimise import make_programs, minimise  # noqa: E402
from stats.compact.padding import canonical_patch, modifier_index, padding_problem, shared_modifiers  # noqa: E402
from tests.stats.test_hepdata import SIGNALS, small_bkg_only, small_patchset  # noqa: E402

CODES = {"pyhf defaults": {}, "code4/code4p": {"normsys": {"interpcode": "code4"},
                                               "histosys": {"interpcode": "code4p"}}}


def every_modifier_spec() -> dict:
    """Two channels and three samples carrying every HistFactory modifier type, with measurement overrides."""
    return {
        "channels": [
            {"name": "SR", "samples": [
                {"name": "signal", "data": [6.0, 3.0], "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "sig_xs", "type": "normsys", "data": {"hi": 1.12, "lo": 0.85}},
                    {"name": "jes", "type": "histosys", "data": {"hi_data": [6.6, 3.1], "lo_data": [5.1, 2.95]}},
                    {"name": "stat_SR", "type": "staterror", "data": [0.6, 0.4]}]},
                {"name": "bkg", "data": [50.0, 20.0], "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "jes", "type": "normsys", "data": {"hi": 1.05, "lo": 0.97}},
                    {"name": "jes", "type": "histosys", "data": {"hi_data": [53.0, 21.5], "lo_data": [48.0, 19.0]}},
                    {"name": "stat_SR", "type": "staterror", "data": [3.0, 2.0]},
                    {"name": "shape_SR", "type": "shapesys", "data": [4.0, 0.0]}]},
                {"name": "fakes", "data": [8.0, 0.0], "modifiers": [
                    {"name": "fake_norm", "type": "normsys", "data": {"hi": 1.3, "lo": 0.6}},
                    {"name": "fake_shape", "type": "shapefactor", "data": None}]}]},
            {"name": "CR", "samples": [
                {"name": "bkg", "data": [200.0], "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "mu_bkg", "type": "normfactor", "data": None},
                    {"name": "jes", "type": "histosys", "data": {"hi_data": [206.0], "lo_data": [195.0]}},
                    {"name": "stat_CR", "type": "staterror", "data": [0.0]}]}]},
        ],
        "observations": [{"name": "SR", "data": [66.0, 21.0]}, {"name": "CR", "data": [205.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.9, 1.1]], "inits": [1.0]},
            {"name": "mu_bkg", "bounds": [[0.1, 3.0]], "inits": [1.2]}]}}],
        "version": "1.0.0",
    }


def model_and_compact(spec: dict, settings: dict):
    workspace = pyhf.Workspace(spec)
    model = workspace.model(modifier_settings=settings)
    structure = compactmodel.build_structure(spec["channels"], model.config, settings)
    numbers = compactmodel.build_numbers(structure, spec["channels"],
                                         {o["name"]: o["data"] for o in spec["observations"]},
                                         compactmodel.parameter_defaults(model.config))
    return model, workspace.data(model), structure, numbers


@pytest.mark.slow
@pytest.mark.parametrize("codes", list(CODES))
def test_every_modifier_type_matches_pyhf(codes):
    pyhf.set_backend("numpy")
    model, data, structure, numbers = model_and_compact(every_modifier_spec(), CODES[codes])
    assert compactmodel.verify(structure, numbers, model, data) is None
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    bounds = np.asarray(model.config.suggested_bounds())
    tensors = compactmodel.Numbers(*(jnp.asarray(f) for f in numbers))
    for _ in range(20):  # random points inside the bounds, |alpha| up to 2: both sides of every interpolation
        pars = np.clip(np.asarray(model.config.suggested_init()) + rng.uniform(-2, 2, model.config.npars) * 0.5
                       * np.minimum(bounds[:, 1] - bounds[:, 0], 4.0), bounds[:, 0], bounds[:, 1])
        mine = np.asarray(compactmodel.expected_main(structure, tensors, jnp.asarray(pars)))
        np.testing.assert_allclose(mine, model.expected_actualdata(pars), rtol=1e-12)
        assert float(compactmodel.logpdf(structure, tensors, jnp.asarray(pars), jnp.asarray(numbers.data))) == \
            pytest.approx(float(model.logpdf(pars, data)[0]), rel=1e-12)
    # The zero-uncertainty staterror bin is fixed, as pyhf fixes it; shapesys on a zero-uncertainty bin too.
    assert np.array_equal(numbers.fixed, model.config.suggested_fixed())
    assert numbers.fixed.sum() == 2


def test_verify_reports_a_different_likelihood():
    pyhf.set_backend("numpy")
    model, data, structure, numbers = model_and_compact(every_modifier_spec(), CODES["code4/code4p"])
    wrong = numbers._replace(up=numbers.up * 1.5)
    assert "differs from pyhf" in compactmodel.verify(structure, wrong, model, data)
    assert "fixed" in compactmodel.verify(structure, numbers._replace(fixed=~numbers.fixed), model, data)


def test_unsupported_interpolation_and_layout_are_refused():
    spec = every_modifier_spec()
    model = pyhf.Workspace(spec).model()
    with pytest.raises(Unsupported, match="histosys interpolation code2"):
        compactmodel.build_structure(spec["channels"], model.config, {"histosys": {"interpcode": "code2"}})
    spanning = copy.deepcopy(spec)
    spanning["channels"][1]["samples"][0]["modifiers"].append({"name": "shape_SR", "type": "shapesys", "data": [5.0]})
    with pytest.raises(Exception, match="shape_SR"):  # pyhf itself refuses it, or the compact model does
        compactmodel.build_structure(spanning["channels"], pyhf.Workspace(spanning).model().config, {})


def test_minimizer_stops_at_an_active_bound():
    import jax.numpy as jnp

    def f(x):  # minimum at (-1, 2) outside the bound x0 >= 0: the bounded minimum is (0, 2)
        return (x[0] + 1.0) ** 2 + 3.0 * (x[1] - 2.0) ** 2 + 0.5 * x[0] * x[1]

    x0 = jnp.array([2.0, 0.0])
    x, fx, _, _, converged, _ = minimise(f, x0, jnp.eye(2), jnp.array([False, False]),
                                      jnp.array([0.0, -10.0]), jnp.array([5.0, 10.0]))
    assert bool(converged)
    np.testing.assert_allclose(np.asarray(x), [0.0, 2.0], atol=1e-7)
    assert float(fx) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("test_stat", ["qtilde", "q"])
@pytest.mark.parametrize("observed", [[66.0, 21.0], [52.0, 16.0]])  # an excess, and a deficit (mu_hat at 0)
def test_hypotest_matches_pyhf(test_stat, observed):
    spec = every_modifier_spec()
    spec["observations"][0]["data"] = observed
    settings = CODES["code4/code4p"]
    pyhf.set_backend("numpy")
    model, data, structure, numbers = model_and_compact(spec, settings)
    got = hypotest(make_programs(structure), structure, numbers, mu=1.0, test_stat=test_stat)
    assert got.method == "compact" and all(fit.edm < 1e-6 for fit in got.fits.values())
    cls_obs, cls_exp = pyhf.infer.hypotest(1.0, data, model, test_stat=test_stat, return_expected_set=True)
    assert got.CLs_obs == pytest.approx(float(cls_obs), rel=1e-4)
    np.testing.assert_allclose(got.CLs_exp, np.asarray(cls_exp, dtype=float), rtol=1e-4)
    if observed[0] < 60:
        assert got.fits["free"].mu == 0.0  # the deficit puts the free fit's POI on its lower bound


def test_padding_problem_accepts_canonical_padding_and_names_tampering():
    bkg = small_bkg_only()
    specs = small_patchset(bkg, SIGNALS)["patches"]
    specs[0]["patch"][0]["value"]["modifiers"].pop()  # the first signal lacks bkg_norm: padding adds it
    shared, index = shared_modifiers(bkg, specs), modifier_index(bkg)
    canonical = canonical_patch(specs[0], shared, bkg)
    assert len(canonical["patch"][0]["value"]["modifiers"]) == 2
    assert padding_problem(specs[0], canonical, index) is None
    not_neutral = copy.deepcopy(canonical)
    not_neutral["patch"][0]["value"]["modifiers"][-1]["data"] = {"hi": 1.1, "lo": 0.9}
    assert "not neutral" in padding_problem(specs[0], not_neutral, index)
    new_parameter = copy.deepcopy(canonical)
    new_parameter["patch"][0]["value"]["modifiers"][-1]["name"] = "invented"
    assert "introduces the parameter invented" in padding_problem(specs[0], new_parameter, index)
    dropped = {**canonical, "patch": []}
    assert padding_problem(specs[0], dropped, index) == "padding dropped an operation"
    extra_sample = copy.deepcopy(canonical)
    extra_sample["patch"].append({"op": "add", "path": "/channels/0/samples/2",
                                  "value": {"name": "ghost", "data": [1.0, 0.0], "modifiers": []}})
    assert "non-zero yields" in padding_problem(specs[0], extra_sample, index)
