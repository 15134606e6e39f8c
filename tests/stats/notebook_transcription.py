"""The ATLAS open-data statistics notebook's fit, workspace and cabinetry calls, transcribed call for call.

Source: ``13-TeV-examples/uproot_python/HyyAnalysis_statistics.ipynb`` of
atlas-outreach-data-tools/notebooks-collection-opendata, as first published (commit 623e096): ``fitModel``,
``makePyhfConfig`` and the significance of its mass scan. The calls, their arguments and their order are the
notebook's (lmfit models without prefixes, the polynomial started from ``guess``, amplitude start 100 in
[0, 1e4], width start 2 in [1, 5] GeV, weights ``1/sqrt(N)``, the shapesys from the full model's
``eval_uncertainty(sigma=1)``, ``pyhf.Workspace``, ``cabinetry.fit.significance``); plotting and printing are left
out. It is the independent reference of ``stats.background``'s ``"tutorial"`` method and must not import the
project.
"""

import cabinetry
import lmfit
import numpy as np
import pyhf


def fit_model(bin_centres, data_x, mass=125, degree=4):
    """The notebook's ``fitModel``: returns signal, background, model uncertainty per bin and lmfit's result."""
    data_x_errors = np.sqrt(data_x)
    polynomial_mod = lmfit.models.PolynomialModel(degree)
    gaussian_mod = lmfit.models.GaussianModel()
    pars = polynomial_mod.guess(data_x, x=bin_centres)
    pars += gaussian_mod.make_params(center=dict(value=mass, vary=False),
                                     amplitude=dict(value=100, min=0, max=1e4),
                                     sigma=dict(value=2, min=1, max=5))
    model = polynomial_mod + gaussian_mod
    result = model.fit(data_x, pars, x=bin_centres, weights=1 / data_x_errors)
    params_dict = result.params
    background_x = polynomial_mod.eval(params=params_dict, x=bin_centres)
    signal_x = gaussian_mod.eval(params=params_dict, x=bin_centres)
    model_x_errors = result.eval_uncertainty(sigma=1)
    return signal_x, background_x, model_x_errors, result


def make_pyhf_config(data_x, signal_x, background_x, model_x_errors):
    """The notebook's ``makePyhfConfig``: one region, signal with normfactor ``mu``, background with shapesys."""
    channels = [{
        "name": "region",
        "samples": [
            {"name": "signal", "data": signal_x.tolist(),
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": background_x.tolist(),
             "modifiers": [{"name": "bkg_uncert", "type": "shapesys", "data": model_x_errors.tolist()}]},
        ],
    }]
    return {
        "version": "1.0.0",
        "channels": channels,
        "observations": [{"name": "region", "data": data_x.tolist()}],
        "measurements": [{"name": "measurement", "config": {"poi": "mu", "parameters": []}}],
    }


def significance_at(bin_centres, data_x, mass, degree=4):
    """One iteration of the notebook's mass scan: fit, workspace, ``cabinetry.fit.significance``.

    Returns:
        (lmfit result, cabinetry's SignificanceResults).
    """
    signal_x, background_x, model_x_errors, result = fit_model(bin_centres, data_x, mass=mass, degree=degree)
    workspace_spec = make_pyhf_config(data_x, signal_x, background_x, model_x_errors)
    ws = pyhf.Workspace(workspace_spec)
    model = ws.model()
    data = ws.data(model)
    return result, cabinetry.fit.significance(model, data)
