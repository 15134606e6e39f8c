"""Pulls, ranking and correlations with verified fits, against cabinetry's own fit.fit / fit.ranking."""

from __future__ import annotations

import cabinetry
import numpy as np
import pyhf
import pytest

from stats.diagnostics import fit_diagnostics


def small_spec() -> dict:
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": [4.0, 9.0, 3.0],
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None},
                           {"name": "lumi", "type": "lumi", "data": None}]},
            {"name": "bkg", "data": [30.0, 25.0, 20.0],
             "modifiers": [{"name": "jes", "type": "histosys",
                            "data": {"hi_data": [33.0, 26.0, 19.0], "lo_data": [27.5, 24.0, 21.5]}},
                           {"name": "xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}},
                           {"name": "mcstat", "type": "staterror", "data": [2.0, 1.5, 1.8]}]}]}],
        "observations": [{"name": "SR", "data": [38.0, 36.0, 22.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.9, 1.1]], "inits": [1.0]}]}}],
        "version": "1.0.0",
    }


def small_model():
    workspace = pyhf.Workspace(small_spec())
    model = workspace.model(modifier_settings={"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}})
    return model, workspace.data(model)


@pytest.fixture(scope="module")
def eager():
    pyhf.set_backend("numpy")
    model, data = small_model()
    return fit_diagnostics(model, data)


@pytest.mark.slow
def test_fit_and_ranking_agree_with_cabinetry(eager):
    pyhf.set_backend("numpy")
    model, data = small_model()
    got = eager
    reference = cabinetry.fit.fit(model, data)
    assert got.fit.best_twice_nll <= reference.best_twice_nll + 1e-6  # never a higher minimum than cabinetry's
    np.testing.assert_allclose(got.fit.bestfit, reference.bestfit, atol=2e-3)
    np.testing.assert_allclose(got.fit.uncertainty, reference.uncertainty, rtol=2e-2, atol=1e-4)
    np.testing.assert_allclose(got.fit.corr_mat, reference.corr_mat, atol=2e-2)
    ranking = cabinetry.fit.ranking(model, data, fit_results=reference)
    assert got.ranking.labels == ranking.labels
    for field in ("prefit_up", "prefit_down", "postfit_up", "postfit_down"):
        np.testing.assert_allclose(getattr(got.ranking, field), getattr(ranking, field), atol=3e-3, err_msg=field)
    # every ranking fit verified and recorded; the largest impact first
    assert all(fit["edm"] < 1e-3 for fits in got.fits.values() for fit in fits.values())
    impacts = got.impacts()
    assert [size for _, size in impacts] == sorted((size for _, size in impacts), reverse=True)
    # pulls: (bestfit - init) / prefit uncertainty, for the constrained parameters
    index = model.config.par_names.index("xsec")
    assert got.pulls["xsec"] == pytest.approx(got.fit.bestfit[index], abs=1e-12)


@pytest.mark.slow
def test_figures_are_written(eager, tmp_path):
    from stats.diagnostics import draw

    paths = draw(eager, tmp_path / "figures")
    assert sorted(p.name for p in paths) == ["correlation_matrix.pdf", "pulls.pdf", "ranking.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.slow
def test_ranking_as_dask_tasks_equals_in_process(eager, dask_scheduler_address):
    from distributed import Client

    pyhf.set_backend("numpy")
    model, data = small_model()
    with Client(dask_scheduler_address) as client:
        distributed = fit_diagnostics(model, data, client=client)
    assert distributed.ranking.labels == eager.ranking.labels
    for field in ("prefit_up", "prefit_down", "postfit_up", "postfit_down"):
        np.testing.assert_array_equal(getattr(distributed.ranking, field), getattr(eager.ranking, field))
    assert distributed.fits == eager.fits


@pytest.mark.slow
def test_top_ranks_the_largest_linearised_impacts(eager):
    pyhf.set_backend("numpy")
    model, data = small_model()
    top = fit_diagnostics(model, data, top=2)
    poi = model.config.poi_index
    linearised = {label: abs(eager.fit.corr_mat[poi][i]) * eager.fit.uncertainty[poi]
                  for i, label in enumerate(model.config.par_names) if i != poi}
    assert set(top.ranking.labels) == set(sorted(linearised, key=lambda k: -linearised[k])[:2])
    for k, label in enumerate(top.ranking.labels):
        j = eager.ranking.labels.index(label)
        assert top.ranking.postfit_up[k] == pytest.approx(eager.ranking.postfit_up[j], abs=1e-6)
